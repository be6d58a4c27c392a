import pytest

@pytest.mark.asyncio
async def test_probe(amanager, store):
    s = await amanager.create_session("x")
    assert s.name == "x"
