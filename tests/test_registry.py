import pytest

from dsvbench.registry import Registry, UserError


def test_duplicate_name_raises():
    registry = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)


def test_unknown_name_suggests_and_lists():
    registry = Registry("method")
    registry.add("herding", 1)
    registry.add("random", 2)
    with pytest.raises(UserError) as error:
        registry.get("hering")
    assert "did you mean 'herding'" in str(error.value)
    assert "known: herding, random" in str(error.value)


def test_names_filter_with_wildcards():
    registry = Registry("model")
    for name in ("convnet", "convnet_bn", "mlp"):
        registry.add(name, name)
    assert registry.names("convnet*") == ["convnet", "convnet_bn"]
    assert "mlp" in registry and len(registry) == 3
