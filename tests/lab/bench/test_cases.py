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
        assert even.index(plain) == even.index(held) + 1
        # Its http twin, held to it, comes first in turn, still next to it.
        assert even.index(held + "-http") == even.index(held) - 1


def test_even_rounds_run_each_http_case_just_before_its_grpc_twin() -> None:
    table = [case.key for case in CASES]
    even = _keys(2)
    for grpc in ("floor-unary-100", "peer-unary-100", "unary-100", "stream-100"):
        http = grpc + "-http"
        assert table.index(http) == table.index(grpc) + 1
        assert even.index(http) == table.index(grpc)
        assert even.index(grpc) == table.index(http)


def test_cases_held_to_nothing_next_to_them_keep_their_place() -> None:
    table = [case.key for case in CASES]
    even = _keys(2)
    for key in ("raw-unary", "raw-stream", "floor-unary-off", "unary-off", "stream-off"):
        assert even.index(key) == table.index(key)
