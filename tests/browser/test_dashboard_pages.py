"""The dashboard's forms in chromium: API keys, a number in ElevenLabs mode, the webhook settings,
and keyboard-only use. Each test checks what the page shows and what the table then holds."""

from __future__ import annotations

import re

from playwright.sync_api import Dialog, Page, expect

from functions.api.masking import mask
from functions.context import Context
from shared.apikeys import hash_api_key
from shared.dynamo import mapping
from shared.models import Account, ApiKey, Number
from tests.browser.conftest import WAIT_MS, Tenant, Ui
from tests.interop.gateway import new_number

expect.set_options(timeout=WAIT_MS)
KEY_PATTERN = re.compile(r"^sk_live_\S{20,}$")


def answer_next_dialog(ui: Ui, accept: bool, seen: list[str]) -> None:
    """The next ``confirm()`` is recorded in ``seen`` and accepted or dismissed."""

    def handle(dialog: Dialog) -> None:
        seen.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    ui.page.once("dialog", handle)


def in_page(page: Page, secret: str) -> bool:
    """Whether ``secret`` is anywhere in the page's HTML (a bool, so a failure never prints it)."""
    return secret in page.content()


def account_keys(ctx: Context, account_id: str) -> list[ApiKey]:
    """Every key record of the account in the table, revoked ones too."""
    partition = mapping.account_partition(account_id, mapping.COLLECTIONS[ApiKey])
    return list(ctx.repo.list(partition, ApiKey, limit=100).items)


def test_sign_in_create_a_key_shown_once_then_revoke_it(
    ui: Ui, tenant: Tenant, ctx: Context
) -> None:
    page = ui.page
    # Signed out, the dashboard sends the browser to the sign-in page, remembering where it was.
    ui.goto("/dashboard/keys")
    expect(page).to_have_url(re.compile(r"/dashboard/sign-in\?next=/dashboard/keys$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ui.shot("sign-in")

    page.get_by_label("API key").fill(tenant.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(ui.url("/dashboard/keys"))
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    expect(page.locator("header .who")).to_have_text(tenant.account_id)
    ui.shot("keys")

    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    created = page.locator("section.created")
    expect(created).to_be_visible()
    expect(created.get_by_role("heading")).to_have_text("Key “browser key” created")
    new_key = page.locator("#new-key").inner_text().strip()
    well_formed = KEY_PATTERN.match(new_key) is not None
    assert well_formed, "the new key is not an sk_live_ key"
    expect(created.get_by_role("button", name="Copy")).to_be_visible()
    ui.shot("key-created")
    # The table holds the key's hash (never the key), active, under the account.
    record = ctx.repo.get(ApiKey, hash_api_key(new_key), consistent=True)
    assert record is not None and record.active
    assert (record.account_id, record.name) == (tenant.account_id, "browser key")

    # Shown once: reloading the page GETs the listing (it does not send the form again) and the
    # key is gone from it; so is it from a visit through the navigation.
    response = page.reload()
    assert response is not None and response.request.method == "GET"
    expect(page).to_have_url(ui.url("/dashboard/keys"))
    expect(page.locator("section.created")).to_have_count(0)
    assert not in_page(page, new_key), "the new key is still in the page"
    row = page.get_by_role("row").filter(has_text="browser key")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(record.prefix)
    ui.shot("keys-after-reload")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.locator("section.created")).to_have_count(0)
    assert not in_page(page, new_key), "the new key is still in the page"
    assert [k.name for k in account_keys(ctx, tenant.account_id)].count("browser key") == 1

    # Revoking asks first; answering "no" leaves the key alone.
    questions: list[str] = []
    answer_next_dialog(ui, accept=False, seen=questions)
    row.get_by_role("button", name="Revoke key browser key").click()
    assert questions and "Revoke the key “browser key”" in questions[0]
    expect(row).to_have_count(1)
    still = ctx.repo.get(ApiKey, record.key_hash, consistent=True)
    assert still is not None and still.active

    answer_next_dialog(ui, accept=True, seen=questions)
    row.get_by_role("button", name="Revoke key browser key").click()
    expect(page.get_by_role("status")).to_have_text(f"Key {record.key_id} was revoked.")
    expect(page.get_by_role("row").filter(has_text="browser key")).to_have_count(0)
    # The session's own key is still listed, and cannot revoke itself.
    expect(page.get_by_role("row").filter(has_text="this session's key")).to_have_count(1)
    ui.shot("key-revoked")
    revoked = ctx.repo.get(ApiKey, record.key_hash, consistent=True)
    assert revoked is not None and not revoked.active and revoked.revoked_at is not None
    session_key = ctx.repo.get(ApiKey, hash_api_key(tenant.key), consistent=True)
    assert session_key is not None and session_key.active


def test_add_a_number_in_elevenlabs_mode(ui: Ui, tenant: Tenant, ctx: Context) -> None:
    page = ui.page
    ui.sign_in(tenant.key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    ui.shot("overview")
    ui.shot("overview-phone", phone=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Numbers").click()
    expect(page.get_by_role("heading", name="Numbers")).to_be_visible()
    expect(page.get_by_role("cell", name="No numbers yet.")).to_be_visible()
    page.get_by_role("link", name="Add a number").click()
    expect(page.get_by_role("heading", name="Add a number")).to_be_visible()

    number = new_number()
    page.get_by_label("Number", exact=True).fill(number)
    agent_field = page.get_by_label("ElevenLabs agent id")
    bot_field = page.get_by_label("Bot WebSocket URL")
    # Only the chosen mode's field is shown (CSS :has(), no script).
    expect(agent_field).to_be_hidden()
    page.get_by_role("radio", name="ElevenLabs").check()
    expect(agent_field).to_be_visible()
    expect(bot_field).to_be_hidden()
    agent_field.fill("agent_browser_0123")
    page.get_by_label("Description").fill("front desk")
    ui.shot("number-form-elevenlabs")
    page.get_by_role("button", name="Add number").click()

    expect(page.get_by_role("heading", name="Numbers")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=number)
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell").nth(1)).to_have_text("ElevenLabs")
    expect(row).to_contain_text("agent_browser_0123")
    expect(row).to_contain_text("front desk")
    ui.shot("numbers")
    ui.shot("numbers-phone", phone=True)
    stored = ctx.repo.get(Number, number, consistent=True)
    assert stored is not None and stored.account_id == tenant.account_id
    assert stored.route is not None
    assert stored.route.socket_url == "elevenlabs&agent_browser_0123"
    assert (stored.route.webhook_url, stored.route.agent_uuid) == (None, None)

    # The edit form comes back in the same mode with the agent filled in.
    row.get_by_role("link", name=number).click()
    expect(page.get_by_role("radio", name="ElevenLabs")).to_be_checked()
    expect(page.get_by_label("ElevenLabs agent id")).to_have_value("agent_browser_0123")
    ui.shot("number-edit")


def test_webhook_url_and_secret_rotation(ui: Ui, tenant: Tenant, ctx: Context) -> None:
    page = ui.page
    ui.sign_in(tenant.key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Account settings")).to_be_visible()
    ui.shot("account")

    hook = "http://127.0.0.1:9/agera-hooks"
    page.get_by_label("Webhook URL").fill(hook)
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_have_text("Settings saved.")
    expect(page.get_by_label("Webhook URL")).to_have_value(hook)
    ui.shot("account-saved")
    account = ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert account is not None and account.webhook_url == hook
    old_secret = account.webhook_secret
    assert old_secret

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhook secret").click()
    expect(page.get_by_role("heading", name="Webhook secret")).to_be_visible()
    expect(page.locator("#secret code")).to_have_text(mask(old_secret) or "")
    assert not in_page(page, old_secret), "the secret is in the page unmasked"
    ui.shot("webhook-secret")

    questions: list[str] = []
    answer_next_dialog(ui, accept=True, seen=questions)
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.get_by_role("status")).to_contain_text("The webhook secret was replaced")
    assert questions and questions[0].startswith("Replace the webhook secret?")
    rotated = ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert rotated is not None
    new_secret = rotated.webhook_secret
    assert new_secret and new_secret != old_secret
    assert rotated.webhook_url == hook  # rotation leaves the other settings alone
    # Masked: its last characters only, neither secret in the page.
    expect(page.locator("#secret code")).to_have_text(mask(new_secret) or "")
    assert not in_page(page, new_secret), "the new secret is in the page unmasked"
    assert not in_page(page, old_secret), "the old secret is in the page"
    ui.shot("webhook-secret-rotated")
    # Reloading shows the page again; it does not rotate a second time.
    response = page.reload()
    assert response is not None and response.request.method == "GET"
    expect(page).to_have_url(ui.url("/dashboard/webhook-secret"))
    expect(page.locator("#secret code")).to_have_text(mask(new_secret) or "")
    again = ctx.repo.get(Account, tenant.account_id, consistent=True)
    assert again is not None and again.webhook_secret == new_secret

    page.get_by_role("button", name="Reveal").click()
    expect(page.locator("#secret-value")).to_have_text(new_secret)
    expect(page.locator("#secret").get_by_role("button", name="Copy")).to_be_visible()
    ui.shot("webhook-secret-revealed")


def test_keyboard_only_sign_in_and_create_a_key(ui: Ui, tenant: Tenant, ctx: Context) -> None:
    page = ui.page
    ui.goto("/dashboard/sign-in")

    def focus_on(selector: str, most: int = 40) -> int:
        """Tab until ``selector`` has the focus; how many presses it took."""
        target = page.locator(selector)
        for presses in range(1, most + 1):
            page.keyboard.press("Tab")
            if target.evaluate("element => element === document.activeElement"):
                return presses
        raise AssertionError(f"{selector} was not reached with {most} Tab presses")

    # The first stop is the skip link, made visible when focused.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    focus_on("#f-api_key")
    page.keyboard.type(tenant.key)
    page.keyboard.press("Enter")
    expect(page).to_have_url(ui.url("/dashboard/"))
    ui.shot("keyboard-overview")

    # The main navigation is reachable by Tab; Enter follows the link.
    focus_on("nav a[href='/dashboard/keys']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    focus_on("#f-name")
    page.keyboard.type("keyboard key")
    page.keyboard.press("Enter")
    expect(page.locator("section.created")).to_be_visible()
    new_key = page.locator("#new-key").inner_text().strip()
    record = ctx.repo.get(ApiKey, hash_api_key(new_key), consistent=True)
    assert record is not None and record.active and record.name == "keyboard key"
    # Tab reaches the new key's copy button; Enter presses it and the key is on the clipboard.
    ui.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    focus_on("section.created button[data-copy]")
    ui.shot("keyboard-key-created")
    page.keyboard.press("Enter")
    expect(page.locator("section.created button[data-copy]")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()") == new_key
    assert copied, "the copy button did not put the key on the clipboard"


def test_the_watch_catches_a_csp_violation(ui: Ui, tenant: Tenant) -> None:
    """The check every page goes through can fail: an inline script is refused by the page's
    Content-Security-Policy, and the refusal is recorded."""
    ui.sign_in(tenant.key)
    with ui.page.expect_console_message(lambda m: "CSP violation" in m.text):
        ui.page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.inlineRan = true'; document.body.append(s); }"
        )
    assert ui.page.evaluate("window.inlineRan === undefined")
    problems = list(ui.problems)
    ui.problems.clear()
    assert any("CSP violation: script-src" in p for p in problems), problems
