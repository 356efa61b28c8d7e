"""tf_quiet: the TensorFlow start-up lines that are not errors are dropped, every other line is kept."""

from ctpet_srgan.tf_quiet import filter_noise


def test_noise_lines_dropped_and_real_errors_kept():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different results.\n"
        "I0000 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use available CPU instructions.\n"
        "To enable the following instructions: AVX512F, in other operations, rebuild TensorFlow.\n"
        "E0000 cuda_executor.cc:1228] failed call to cuInit: INTERNAL: CUDA error\n"
        "E0000 real.cc:1] could not open /data/x: Permission denied\n"
        "plain line\n"
    )
    out = filter_noise(text)
    assert out == "E0000 real.cc:1] could not open /data/x: Permission denied\nplain line\n"


def test_a_line_after_the_cpu_note_that_is_not_its_continuation_is_kept():
    text = "I0000 cpu_feature_guard.cc:210] optimized\nTo keep: something else\n"
    assert filter_noise(text) == "To keep: something else\n"
