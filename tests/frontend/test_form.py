"""The start form is built from the API's JSON schema of a run: its limits, defaults and
fields are RunConfig's, so a change there reaches the page without touching it."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.frontend.conftest import wait_until_ready


def serve_schema(page, change) -> None:
    """Reload the page with /openapi.json's RunCreate schema passed through `change`."""

    def handle(route):
        response = route.fetch()
        spec = response.json()
        change(spec["components"]["schemas"]["RunCreate"])
        route.fulfill(response=response, body=json.dumps(spec))

    page.route("**/openapi.json", handle)
    page.reload()
    wait_until_ready(page)


def test_the_forms_limits_and_fields_come_from_the_schema(page):
    def change(schema):
        schema["properties"]["steps"]["maximum"] = 300
        # A field's limits, default and texts as the schema has them, not as the page was
        # written; a field the page has no slot for lands at the end of its section.
        schema["properties"]["init_scale"] = {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 10,
            "default": 1.5,
            "title": "Init scale",
            "description": "Scale of the initial weights",
        }
        schema["properties"]["pooling"] = {
            "type": "string",
            "enum": ["max", "average"],
            "default": "max",
            "title": "Pooling",
            "advanced": True,
        }

    serve_schema(page, change)
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    steps = page.get_by_test_id("field-steps")
    expect(steps).to_have_attribute("max", "300")
    steps.fill("301")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("error-steps")).to_have_text("must be at most 300")

    init_scale = page.get_by_label("Init scale")
    expect(init_scale).to_have_value("1.5")
    help_ = page.locator("label[for=f-init_scale]")
    expect(help_).to_have_attribute("title", "Scale of the initial weights")
    init_scale.fill("0")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("error-init_scale")).to_have_text("must be greater than 0")
    pooling = page.locator("[data-form-section=advanced] [data-testid=field-pooling]")
    expect(pooling.locator("option")).to_have_text(["max", "average"])
    expect(pooling).to_have_value("max")
    assert posts == []  # the page refused both before sending anything


def test_the_evaluation_count_includes_step_0_as_the_server_counts_it(page):
    page.get_by_test_id("field-steps").fill("1000")
    page.get_by_test_id("field-eval_every").fill("1")
    page.get_by_test_id("submit").click()  # invalid: nothing is sent
    error = page.get_by_test_id("error-eval_every")
    expect(error).to_have_text(
        "1001 evaluations (step 0 included) for 1000 steps is more than 1000; use at least 2"
    )
    page.get_by_test_id("field-steps").fill("999")  # 1000 evaluations: the API's limit
    expect(error).to_be_hidden()
