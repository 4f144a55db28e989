import pytest

from app.engine.dsconfig import parse_ds_config
from app.engine.runtime import resolve_plan
from app.errors import ConfigError

AUTO = parse_ds_config({"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
                        "inference": {"replace_with_kernel_inject": True}})


def plan(device="auto", dtype="auto", engine="auto", ds=AUTO, cuda=True, bf16=True, dspeed=True, transformers="4.57.1"):
    return resolve_plan(device, dtype, engine, ds, cuda_available=lambda: cuda, bf16_supported=lambda d: bf16,
                        deepspeed_importable=lambda: dspeed, transformers_version=lambda: transformers)


def test_cpu_auto():
    p = plan(cuda=False)
    assert (p.device, p.dtype, p.engine, p.kernel_inject) == ("cpu", "fp32", "torch", False)


def test_cuda_auto_bf16_where_supported_else_fp16():
    assert (plan().device, plan().dtype, plan().engine, plan().kernel_inject) == ("cuda:0", "bf16", "deepspeed", True)
    assert plan(bf16=False).dtype == "fp16"


def test_ds_config_precision_blocks_drive_auto_dtype():
    fp16_only = parse_ds_config({"fp16": {"enabled": True}, "bf16": {"enabled": False}})
    assert plan(ds=fp16_only).dtype == "fp16"
    none = parse_ds_config({"fp16": {"enabled": False}, "bf16": {"enabled": False}})
    assert plan(ds=none).dtype == "fp32"


def test_explicit_choices_win():
    p = plan(device="cuda:1", dtype="fp32", engine="torch")
    assert (p.device, p.dtype, p.engine, p.kernel_inject) == ("cuda:1", "fp32", "torch", False)


def test_kernel_injection_asked_for_under_transformers_5_is_turned_off_with_the_reason():
    # On an H200 the injected layers wrapped, then every forward failed (a tuple where transformers 5 wants a tensor)
    p = plan(transformers="5.17.0")
    assert p.engine == "deepspeed" and not p.kernel_inject
    assert any("transformers 5.17.0 here; it needs < 5" in r for r in p.reasons)
    assert "kernel_inject=False" in p.log_line() and plan(transformers="4.57.1").kernel_inject
    # what a caller who asked for injection is told: those reasons only
    assert "transformers 5.17.0 here" in p.why("kernel injection") and p.why("no such topic") == ""


def test_deepspeed_on_cpu_has_no_kernel_injection():
    p = plan(device="cpu", engine="deepspeed", cuda=False)
    assert p.engine == "deepspeed" and not p.kernel_inject and not p.cuda_graph
    assert any("need CUDA" in r for r in p.reasons)


def test_cuda_requested_without_cuda_fails_clearly():
    with pytest.raises(ConfigError) as e:
        plan(device="cuda", cuda=False)
    assert "use --device cpu" in e.value.message


def test_log_line_is_one_line_and_names_every_block():
    line = plan(cuda=False).log_line(AUTO)
    assert "\n" not in line
    for part in ("device=cpu", "dtype=fp32", "engine=torch", "precision:", "inference:", "zero_optimization:"):
        assert part in line


def cpu_plan(dtype, engine="auto", works=lambda d: None, **kw):
    return resolve_plan("cpu", dtype, engine, AUTO, cuda_available=lambda: False, bf16_supported=lambda d: False,
                        deepspeed_importable=lambda: True, cpu_dtype_works=works, **kw)


def test_int8_is_cpu_dynamic_quantisation():
    p = cpu_plan("int8")
    assert (p.dtype, p.engine, p.quantized) == ("int8", "torch", True)
    assert any("dynamic quantisation" in r for r in p.reasons)
    assert cpu_plan("int8", engine="deepspeed").engine == "deepspeed"  # DeepSpeed wraps the quantised module
    with pytest.raises(ConfigError, match="CPU; on CUDA use fp16"):
        plan(dtype="int8")


def test_a_cpu_dtype_that_kills_the_process_is_refused_at_start():
    # The probe runs the dtype in a child; here it reports what bf16 did on an AMX-advertising VM.
    probed = []

    def sigill(dtype):
        probed.append(dtype)
        return f"a {dtype} matmul on this CPU kills the process (SIGILL)"

    with pytest.raises(ConfigError, match=r"--dtype bf16: a bf16 matmul .* \(SIGILL\); use --dtype fp32"):
        cpu_plan("bf16", works=sigill)
    assert probed == ["bf16"]
    assert cpu_plan("fp32", works=sigill).dtype == "fp32"  # fp32 and auto never probe
    assert cpu_plan("auto", works=sigill).dtype == "fp32"
    assert probed == ["bf16"]


def test_min_batch_fill_auto_depends_on_the_device():
    assert cpu_plan("auto").min_batch_fill == 0.9
    assert plan().min_batch_fill == 0.5
    assert cpu_plan("auto", min_batch_fill="0.25").min_batch_fill == 0.25
    assert "min_batch_fill=0.9" in cpu_plan("auto").log_line()



def test_length_buckets_are_on_unless_turned_off_and_the_plan_says_which():
    on = resolve_plan("cpu", "auto", "torch", AUTO)
    off = resolve_plan("cpu", "auto", "torch", AUTO, length_buckets="off")
    assert on.length_buckets is True and "length_buckets=on" in on.log_line()
    assert off.length_buckets is False and "length_buckets=off" in off.log_line()
    assert any("every length seen is a new shape" in r for r in off.reasons)


def test_cudnn_attention_is_off_unless_asked_for_and_only_ever_on_cuda():
    """The demo soak on an H200 kept ~145 KiB of C heap per request; cuDNN's attention kernel keeps a compiled
    graph per input shape for the life of the process (pytorch/pytorch#190388), so it is off by default."""
    def with_cudnn(value, cuda=True):  # noqa: ANN001, ANN202
        return resolve_plan("auto", "auto", "torch", AUTO, cuda_available=lambda: cuda, bf16_supported=lambda d: True,
                            deepspeed_importable=lambda: True, cudnn_attention=value)
    assert plan().cudnn_attention is False and "cudnn_attention=off" in plan().log_line()
    assert any("cuDNN's attention kernel keeps a compiled graph" in r for r in plan().reasons)
    assert with_cudnn("on").cudnn_attention is True and "cudnn_attention=on" in with_cudnn("on").log_line()
    assert with_cudnn("on", cuda=False).cudnn_attention is False


@pytest.mark.parametrize("allowed", [True, False])
def test_preparing_a_model_sets_torchs_cudnn_attention_switch_from_the_plan(allowed):
    import dataclasses

    import torch

    from app.engine.wrapping import prepare_module

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(not allowed)
        prepare_module(torch.nn.Linear(2, 2), dataclasses.replace(plan(cuda=False), cudnn_attention=allowed))
        assert torch.backends.cuda.cudnn_sdp_enabled() is allowed
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
