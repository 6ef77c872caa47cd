from lab.bench.cases import CASES, STREAM_10_PLAIN, UNARY_10_PLAIN, round_order


def _keys(round_number: int) -> list[str]:
    return [case.key for case in round_order(CASES, round_number)]


def test_odd_rounds_run_the_cases_in_the_order_of_the_table() -> None:
    table = [case.key for case in CASES]
    assert _keys(1) == table
    assert _keys(3) == table


def test_even_rounds_run_each_keeping_case_just_before_its_keeping_off_twin() -> None:
    table = [case.key for case in CASES]
    even = _keys(2)
    assert sorted(even) == sorted(table)
    for plain, held in ((UNARY_10_PLAIN, "unary-10"), (STREAM_10_PLAIN, "stream-10")):
        assert table.index(held) == table.index(plain) + 1
        assert even.index(held) == table.index(plain)
        assert even.index(plain) == table.index(held)
    moved = {UNARY_10_PLAIN, STREAM_10_PLAIN, "unary-10", "stream-10"}
    assert [k for k in even if k not in moved] == [k for k in table if k not in moved]
