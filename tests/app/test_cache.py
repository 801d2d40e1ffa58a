"""The persistent compilation cache keeps one folder per compile configuration."""
import jax

from genetic_dl.app import cache


def test_each_configuration_gets_its_own_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    two = cache.configuration()
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert cache.configuration() != two and jax.__version__ in two
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    before = jax.config.jax_compilation_cache_dir
    try:
        path = cache.enable_compile_cache()
        assert path == str(tmp_path / cache.configuration()) and (tmp_path / path).is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    monkeypatch.setenv(cache.ENV, "off")
    assert cache.enable_compile_cache() is None
