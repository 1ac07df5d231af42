"""Cron expressions in words (the `dromos jobs` and status page schedule column)."""

from __future__ import annotations

import pytest

from scheduler.batch.cron_words import describe_cron


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("30 2 * * *", "every day at 02:30"),
        ("0 0,12 * * *", "every day at 00:00 and 12:00"),
        ("0 */6 * * *", "every day at 00:00, 06:00, 12:00 and 18:00"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("15,45 * * * *", "every hour at :15 and :45"),
        ("0 */2 * * *", "every 2 hours at :00"),
        ("7 */6,1 * * *", "at :07 past hours 00, 01, 06, 12 and 18"),
        ("0 9-17 * * mon-fri", "every hour from 09:00 to 17:00 on Monday to Friday"),
        ("*/5 9 * * 1-5", "every 5 minutes from 09:00 to 09:55 on Monday to Friday"),
        ("*/10 9-17 * * *", "every 10 minutes from 09:00 to 17:50"),
        ("* 3,5 * * *", "every minute during hours 03 and 05"),
        ("5 4 * * sun", "every Sunday at 04:05"),
        ("0 0 * * 7", "every Sunday at 00:00"),  # 7 is Sunday too, as croniter reads it
        ("0 8 * * 1,3,5", "every Monday, Wednesday and Friday at 08:00"),
        ("0 12 * 6-8 6,0", "every Saturday and Sunday at 12:00 from June to August"),
        ("0 0 * * 5#2", "every month on the 2nd Friday at 00:00"),
        ("0 0 1 * *", "every month on day 1 at 00:00"),
        ("0 0 1,15 * *", "every month on days 1 and 15 at 00:00"),
        ("0 0 1-7 * *", "every month on days 1 to 7 at 00:00"),
        ("0 0 L * *", "every month on the last day at 00:00"),
        ("0 0 5,L * *", "every month on day 5 and the last day at 00:00"),
        ("*/30 * 1 * *", "every 30 minutes on day 1 of the month"),
        ("0 0 1 * 1", "at 00:00 on day 1 of the month or on Monday"),  # cron's OR of days
        ("0 0 1 1 *", "every year on 1 January at 00:00"),
        ("30 3 * 1,7 *", "every day at 03:30 in January and July"),
    ],
)
def test_describe_cron(expression: str, words: str) -> None:
    assert describe_cron(expression) == words


def test_an_invalid_expression_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid"):
        describe_cron("61 * * * *")
