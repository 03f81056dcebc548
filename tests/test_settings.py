from infill_ls.settings import Settings


def test_valid_updates_apply_and_invalid_ones_keep_the_previous_value():
    settings, errors = Settings(model="m").merged({"maxNewTokens": 32, "multiline": "sometimes", "device": "gpu9"})
    assert settings.maxNewTokens == 32
    assert settings.multiline == "auto" and settings.device == "auto"
    assert len(errors) == 2 and any("infill.multiline" in e for e in errors)


def test_empty_values_do_not_erase_earlier_ones():
    settings, errors = Settings(model="from-flag").merged({"model": "", "quantization": None})
    assert settings.model == "from-flag" and errors == []


def test_unknown_keys_and_wrong_types_are_reported():
    _, errors = Settings().merged({"modle": "x", "enable": "yes", "maxNewTokens": 3.5})
    assert len(errors) == 3


def test_budget_must_leave_room_for_the_prompt():
    settings, errors = Settings().merged({"maxNewTokens": 2000, "contextTokens": 1000})
    assert (settings.maxNewTokens, settings.contextTokens) == (64, 2048)
    assert errors
