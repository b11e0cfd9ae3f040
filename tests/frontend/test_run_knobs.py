"""The activation and init-scale knobs in the start form, through to the server's runs."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.frontend.dashboard import start


def test_the_knobs_reach_the_runs_and_default_to_the_networks_own(page, server):
    activation = page.get_by_test_id("field-activation")
    expect(activation).to_have_value("")
    # The default is shown by name, not as a blank select.
    expect(activation.locator("option:checked")).to_have_text("Network's own")
    # None is a choice of its own, named, before the schema's values.
    expect(activation.locator("option")).to_have_text(["Network's own", "ReLU", "Sigmoid", "Tanh"])
    expect(page.get_by_test_id("field-init_scale")).to_have_value("1")
    runs = start(page, arch="mlp", activation="tanh", init_scale=0.5)
    assert [(r["config"]["activation"], r["config"]["init_scale"]) for r in runs] == [
        ("tanh", 0.5),
        ("tanh", 0.5),
    ]
    server.cancel_active()
    # Chosen back by hand, the network's own starts (it is not the option's text).
    activation.select_option(label="Network's own")
    (run,) = start(page, single=True, init_scale=1)
    assert (run["config"]["activation"], run["config"]["init_scale"]) == (None, 1.0)
    server.cancel_active()
    activation.select_option("sigmoid")
    page.get_by_test_id("preset-seed").click()  # a preset is the whole recipe again
    expect(activation.locator("option:checked")).to_have_text("Network's own")


def test_an_init_scale_out_of_range_is_shown_next_to_it(page):
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.get_by_test_id("field-init_scale").fill("0")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("error-init_scale")).to_contain_text("at least 0.001")
    expect(page.get_by_test_id("field-init_scale")).to_be_focused()
    assert posts == []
