"""The real CPU dtype probe: a child process runs one layer in the dtype (torch, so not a unit test)."""


def test_the_real_cpu_probe_runs_a_child_and_fp32_works_everywhere():
    from app.engine.runtime import _cpu_dtype_works

    assert _cpu_dtype_works("fp32") is None
    assert _cpu_dtype_works("int8") is None  # the quantised kernels the int8 plan runs
