from lab.bench.cases import CASES, Target, Tracing, round_order


def _keys(round_number: int) -> list[str]:
    return [case.key for case in round_order(CASES, round_number)]


def test_odd_rounds_run_the_cases_in_the_order_of_the_table() -> None:
    table = [case.key for case in CASES]
    assert _keys(1) == table
    assert _keys(3) == table


def test_each_keeping_case_runs_beside_its_keeping_off_twin_held_to_it_in_every_round() -> None:
    by_key = {case.key: case for case in CASES}
    for mode in ("unary", "stream"):
        plain, keeping = by_key[f"{mode}-10-plain-beside"], by_key[f"{mode}-10-beside"]
        assert (plain.tracing, keeping.tracing) == (Tracing.SAMPLED_PLAIN, Tracing.SAMPLED)
        assert (plain.beside, keeping.beside) == (keeping.key, plain.key)
        assert keeping.targets == (Target(0.95, plain.key),)
        assert keeping.baseline == plain.key
        for round_number in (1, 2):
            keys = _keys(round_number)
            assert abs(keys.index(plain.key) - keys.index(keeping.key)) == 1
    # Run alone, only the cases that are side by side would be held to each other.
    assert not [
        t for case in CASES for t in case.targets if "plain" in t.against and not case.beside
    ]


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
