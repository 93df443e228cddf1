"""What a listener hears: reply text as the voices are given it (numbers, times, signs), in English and Chinese."""

from __future__ import annotations

import pytest

from assistant.skills.builtin._spoken import clock
from assistant.voice.spoken import SentenceSplitter, speakable


@pytest.mark.parametrize(
    ("written", "heard"),
    [
        # A range of times is one range, and a 24-hour time is said on the 12-hour clock with its half of the day.
        ("Open 9:00-17:00.", "Open 9 AM to 5 PM."),
        ("Open 9:00–17:00 daily", "Open 9 AM to 5 PM daily"),
        ("Open 9am-5pm.", "Open 9 am to 5 pm."),
        ("Open 9am-11am.", "Open 9 to 11 am."),
        ("from 9:00 to 17:00", "from 9 AM to 5 PM"),
        ("between 13:30 and 14:15", "between 1:30 and 2:15 PM"),
        ("Lunch is 12:00-13:00.", "Lunch is noon to 1 PM."),
        ("Meet 9:30-11:00", "Meet 9:30 to 11 o'clock"),
        # The local clock, an alarm's reply and a model's answer say one time alike.
        ("It is 21:30.", "It is 9:30 PM."),
        ("Alarm set for 21:00 tomorrow.", "Alarm set for 9 PM tomorrow."),
        ("It is 9:30 PM.", "It is 9:30 PM."),
        ("It is 0:05.", "It is 12 oh 5 AM."),
        ("It is 00:30.", "It is 12:30 AM."),
        ("Alarm set for 0:00.", "Alarm set for midnight."),
        ("at 07:45", "at 7:45 AM"),
        ("At 12:05 am", "At 12 oh 5 am"),
    ],
)
def test_times_are_said_as_an_english_speaker_says_them(written: str, heard: str) -> None:
    """espeak says "nine o'clock seventeen o'clock" for 9:00-17:00 and "twenty-one o'clock" for 21:00."""
    assert speakable(written, "en") == heard


@pytest.mark.parametrize(
    ("written", "heard"),
    [
        ("营业时间9:00-17:00。", "营业时间上午9点到下午5点。"),
        ("9:30–10:00", "9点30分到10点"),
        ("从9:00到17:00", "从上午9点到下午5点"),
        ("现在是21:30。", "现在是晚上9点30分。"),  # as the clock skill says it
        ("9am-5pm", "上午9点到下午5点"),
        ("14:00-15:30和0:30", "下午2点到3点30分和凌晨0点30分"),
        ("晚上21:00", "晚上9点"),
    ],
)
def test_times_are_said_as_a_chinese_speaker_says_them(written: str, heard: str) -> None:
    """espeak's Mandarin leaves out the dash of 9:00-17:00: "九点十七点"."""
    assert speakable(written, "zh") == heard


@pytest.mark.parametrize(
    ("written", "heard"),
    [
        # A range before the end of a sentence: espeak says "ten dash twenty"
        ("Read pages 10-20.", "Read pages 10 to 20."),
        # Full-width digits: espeak says nothing at all for them
        ("Room １２３ is free.", "Room 123 is free."),
        # A telephone number digit by digit, not "five hundred fifty-five dash one hundred twenty-three..."
        ("Call 555-123-4567.", "Call 5 5 5, 1 2 3, 4 5 6 7."),
        ("Call (555) 123-4567 now", "Call 5 5 5, 1 2 3, 4 5 6 7 now"),
        # A long run of digits is an identifier, not "one quintillion two hundred ..."
        ("Order 1234567890123456789 shipped.", "Order 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 shipped."),
        # Decades: espeak says "nineteen hundred ninety z"
        ("Music of the 1990s and the '80s.", "Music of the 19 nineties and the eighties."),
        ("In the 2000s and the 1900s, 100s of people.", "In the 2 thousands and the 19 hundreds, hundreds of people."),
        ("Open 24/7.", "Open 24 7."),
        # A year after the word that names it as one: espeak says "one thousand eight hundred fifty"
        ("Built in 1999, since 1850, by 1905, in 1900; 1999 people in 2024, in 1500 m.",
         "Built in 19 99, since 18 50, by 19 oh 5, in 19 hundred; 1999 people in 2024, in 1500 meters."),
        ("Walk 10 - 15 km.", "Walk 10 to 15 kilometers."),
        ("1.000.000 people, v1.000.000, 192.168.100.100", "1,000,000 people, v1.000.000, 192.168.100.100"),
        # "x" as times: espeak says "ecks two"
        ("At x2, 1.5x faster; 5 x 3 is 15, a 2x4, x86.", "At times 2, 1.5 times faster; 5 times 3 is 15, a 2x4, x86."),
        ("See you at 9.30pm.", "See you at 9:30 pm."),
        # A date as a day (espeak says "two thousand twenty-four zero five zero one")
        ("Due 2024-05-01, not 2024-13-01.", "Due May 1, 2024, not 2024-13-01."),
        # Titles: espeak ends a sentence at their period ("Doctor. Kim")
        ("Ask Dr. Kim and Mr. Lee, or Prof. Ng.", "Ask Doctor Kim and Mister Lee, or Professor Ng."),
        ("It is No. 5 on the list.", "It is number 5 on the list."),
        # espeak ends a sentence at the last period of initials and at a title's or a month's
        ("In the U.S. Army. In the U.S. It is big.", "In the U.S Army. In the U.S. It is big."),
        ("Climb Mt. Everest on Jan. 5 with Gen. Lee.", "Climb Mount Everest on January 5 with General Lee."),
        # An amount with its size: not "one point five dollars million"
        ("It costs $1.5 million, $2B or $300k.",
         "It costs 1.5 million dollars, 2 billion dollars or 300 thousand dollars."),
        # A range whose ends have units: espeak drops the dash ("ten percent twenty percent")
        ("Up 10%-20%, $5-$10, 5kg-10kg, in 5~10 minutes.",
         "Up 10% to 20%, 5 dollars to 10 dollars, 5 kilograms to 10 kilograms, in 5 to 10 minutes."),
        ("Add 1 1/2 cups and 2 3/4 cups.", "Add 1 and a half cups and 2 and 3 quarters cups."),  # not "1 1 half"
        # Short units espeak spells out or mis-says ("sex" for secs)
        ("5 hrs 10 mins 3 secs, 1 hr, 15 sec, 2 lbs, 6 oz, 1 tsp.",
         "5 hours 10 minutes 3 seconds, 1 hour, 15 seconds, 2 pounds, 6 ounces, 1 teaspoon."),
        ("$0.99, $0.01, $1,299.99, $5.05.", "99 cents, 1 cent, 1,299 dollars 99, 5 dollars 5 cents."),
        ("About 1.5e10 stars, or 3E-5.", "About 1.5 times 10 to the 10 stars, or 3 times 10 to the minus 5."),
        # As written: espeak says these well
        ("-5°C, 3.14, 0.5, 1,000,000, 2024, v1.2.3, Python 3.12, 21st, 50%.",
         "-5 degrees Celsius, 3.14, 0.5, 1,000,000, 2024, v1.2.3, Python 3.12, 21st, 50%."),
    ],
)  # fmt: skip
def test_numbers_are_said_as_an_english_listener_expects(written: str, heard: str) -> None:
    assert speakable(written, "en") == heard


@pytest.mark.parametrize(
    ("written", "heard"),
    [
        # espeak's Mandarin drops the minus sign: "-5°C" was heard as five degrees
        ("气温-5°C，体感-8℃。", "气温零下5摄氏度，体感零下8摄氏度。"),
        ("结果是-3。", "结果是负3。"),
        ("涨幅-5%，3-5%", "涨幅负百分之5，3到百分之5"),
        # A year digit by digit, not 二千二十四
        ("2024年和1999年", "二零二四年和一九九九年"),
        ("2023-2024年", "二零二三到二零二四年"),
        # A mobile number digit by digit, not 一百三十八亿...
        ("电话13812345678。", "电话1 3 8 1 2 3 4 5 6 7 8。"),
        ("房间１２３", "房间123"),
        # Past 9999 espeak's Mandarin groups by thousands: 1000000 is heard as 一万, 12345 as 十二千三百四十五
        (
            "共1,000,000人，12345元，10050米，100000001次，2400000000元。",
            "共100万人，1万2345元，1万零50米，1亿零1次，24亿元。",
        ),
        ("3.14159和2.5万和9999", "3.14159和2.5万和9999"),
        ("约1.000.000人", "约100万人"),
        ("全年24/7营业", "全年全天候营业"),
        ("快2x，5 x 3等于15", "快2倍，5乘3等于15"),
        ("截止2024-05-01。", "截止二零二四年5月1日。"),
        ("营业时间：上午9:00-下午5:00", "营业时间：上午9点到下午5点"),
        # A range whose ends have units: not 百分之10负百分之20
        ("涨幅10%-20%，5月1日-5月3日，100元-200元", "涨幅百分之10到百分之20，5月1日到5月3日，100元到200元"),
        ("5~10分钟，5～10分钟，下午3点~5点", "5到10分钟，5到10分钟，下午3点到5点"),  # espeak: 五十分钟
        ("加1 1/2杯水", "加1又2分之1杯水"),
        # As written: espeak's Mandarin says these well
        ("两个、十一、一百零五、第3名、3.14", "两个、十一、一百零五、第3名、3.14"),
    ],
)
def test_numbers_are_said_as_a_chinese_listener_expects(written: str, heard: str) -> None:
    assert speakable(written, "zh") == heard


@pytest.mark.parametrize(
    ("written", "language", "heard"),
    [
        # A local number to dial, not "five hundred fifty-five to one thousand two hundred thirty-four"
        ("Call 555-1234.", "en", "Call 5 5 5, 1 2 3 4."),
        ("My phone is 555-1000.", "en", "My phone is 5 5 5, 1 0 0 0."),
        ("Pick a number from 200-1000.", "en", "Pick a number from 200 to 1000."),
        ("It is 555-1234.", "en", "It is 5 5 5, 1 2 3 4."),
        ("Call 1234-5678 or 1-800-555-1234.", "en", "Call 1 2 3 4, 5 6 7 8 or 1, 8 0 0, 5 5 5, 1 2 3 4."),
        ("电话555-1234", "zh", "电话5 5 5, 1 2 3 4"),
        ("电话010-12345678。", "zh", "电话0 1 0, 1 2 3 4 5 6 7 8。"),  # not 0 1 0到1234万5678
        ("电话555-123-4567", "zh", "电话5 5 5, 1 2 3, 4 5 6 7"),
        ("请拨打12345热线，电话是65432100。", "zh", "请拨打1 2 3 4 5热线，电话是6 5 4 3 2 1 0 0。"),
        # and ranges stay ranges
        ("Open 9-17, or 9:00-17:00.", "en", "Open 9 to 17, or 9 AM to 5 PM."),
        ("Spend 500-1000 dollars, walk 300-1234 m, from 1990-2000, rooms 101-1050.", "en",
         "Spend 500 to 1000 dollars, walk 300 to 1234 meters, from 19 90 to 2000, rooms 101 to 1050."),
        ("共12345元，500-1000米", "zh", "共1万2345元，500到1000米"),
    ],
)  # fmt: skip
def test_a_telephone_number_is_told_from_a_range(written: str, language: str, heard: str) -> None:
    assert speakable(written, language) == heard


@pytest.mark.parametrize(
    ("reply", "pieces"),
    [
        # A period inside a sentence: a.m., U.S., etc. before a word in lower case, and No. before its number
        (
            "The shop opens at 9 a.m. and closes at 5 p.m. on weekdays. Bye.",
            ["The shop opens at 9 a.m. and closes at 5 p.m. on weekdays.", "Bye."],
        ),
        ("Sure. It costs $3.50 at the U.S. store. Ok.", ["Sure.", "It costs $3.50 at the U.S. store.", "Ok."]),
        ("Meet Dr. Kim at No. 5 Main St. today. Ok.", ["Meet Dr. Kim at No. 5 Main St. today.", "Ok."]),
        ("Open 9 a.m. - 5 p.m. Then close.", ["Open 9 a.m. - 5 p.m.", "Then close."]),
        ("Tea, coffee, etc. are fine. It is 9:30. The alarm is set.",
         ["Tea, coffee, etc. are fine.", "It is 9:30.", "The alarm is set."]),
        # Initials, a title or a month before what they name: "the U.S." and "Army for years." are not two sentences
        ("He served in the U.S. Army for years. Then he left.",
         ["He served in the U.S. Army for years.", "Then he left."]),
        ("The U.N. Security Council met. Books by J.K. Rowling. Ok.",
         ["The U.N. Security Council met.", "Books by J.K. Rowling.", "Ok."]),
        ("Climb Mt. Everest with Gen. Lee on Jan. 5. Ok.", ["Climb Mt. Everest with Gen. Lee on Jan. 5.", "Ok."]),
        # but a new sentence after initials is one
        ("I live in the U.S. It is big. It is 9 a.m. Tomorrow too. Go to the U.K. Thank you.",
         ["I live in the U.S.", "It is big.", "It is 9 a.m.", "Tomorrow too.", "Go to the U.K.", "Thank you."]),
    ],
)  # fmt: skip
def test_a_period_inside_a_sentence_does_not_cut_it(reply: str, pieces: list[str]) -> None:
    """Each piece is said as a sentence, with its pause and falling tone: "and closes at 5 p.m." alone is
    heard as a fragment."""
    splitter, said = SentenceSplitter(), []
    for character in reply:  # streamed as finely as it can be
        said += splitter.push(character)
    assert said + splitter.flush() == pieces


@pytest.mark.parametrize(
    ("hour", "minute", "written"), [(21, 30, "9:30 PM"), (13, 0, "1:00 PM"), (0, 5, "12:05 AM"), (9, 30, "9:30")]
)
def test_the_clock_skill_and_a_model_are_heard_saying_one_time_alike(hour: int, minute: int, written: str) -> None:
    """The clock, timer and alarm skills write a time as `clock` does (21:30, 晚上9点30分); a model writes
    "9:30 PM" or 21:30."""
    assert speakable(f"It is {clock(hour, minute)}.", "en") == speakable(f"It is {written}.", "en")
    assert speakable(f"现在是{clock(hour, minute, 'zh')}。", "zh") == speakable(
        f"现在是{hour:02d}:{minute:02d}。", "zh"
    )


def test_words_in_a_script_the_voice_does_not_read_are_left_out() -> None:
    """espeak spells them ("hebrew shin hebrew lamed…"); a voice keeps Latin letters and its own script's."""
    said = speakable("Shalom, שלום; Moscow, Москва; Café in Việt Nam.", "en")
    assert said.split() == ["Shalom,", ";", "Moscow,", ";", "Café", "in", "Việt", "Nam."]
    assert speakable("Москва and Moscow, 北京", "ru").split() == ["Москва", "and", "Moscow,"]
    assert speakable("서울 and Seoul, 北京", "ko").split() == ["서울", "and", "Seoul,"]
    assert speakable("北京 and Beijing, Москва", "zh").split() == ["北京", "and", "Beijing,"]
    assert speakable("თბილისი, 北京", "ka").split() == ["თბილისი,"]  # a script not known here is kept
