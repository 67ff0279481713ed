//! The real templates of `templates/` (loaded as the binaries load them:
//! `Templates::load(DEFAULT_DIR)`, which falls back to this checkout's folder), rendered with
//! hostile values for every variable: the emails of every kind through `render_email` with
//! a locale from the input (and its fallback chain), and the pages ingest serves through
//! `render_page` with the data its handlers give them (`page`, `reset_form`, `verify_form`).
//! The values come from the input through `arbitrary`; every seed in
//! `fuzz/corpus/template_render/` is a starting point, not a structure.
//!
//! Beyond "no panic", it checks the promises of `mailroom::templates`:
//! - HTML parts and pages escape every value: the output has exactly the `<`, `>`, `"` and `'`
//!   of the template itself (the same render with harmless values of the same emptiness), so
//!   no value can open a tag or leave an attribute, and a value's `<script` never appears raw;
//! - a subject is one line whatever the values;
//! - text parts carry the values as they are (they are not HTML).

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mailroom::domain::Locale;
use mailroom::job::JobKind;
use mailroom::templates::{DEFAULT_DIR, EmailContext, Templates};
use serde_json::json;

static TEMPLATES: LazyLock<Templates> =
    LazyLock::new(|| Templates::load(DEFAULT_DIR).expect("the shipped templates load"));

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    locale: String,
    name: String,
    email: String,
    /// None: a code-only email.
    link: Option<String>,
    expires_in: String,
    expires_hours: u64,
    /// None: a link-only email.
    code: Option<String>,
    page: Page,
}

#[derive(Debug, Arbitrary)]
enum Page {
    /// `response::page`: the words of a page.
    Plain {
        title: String,
        message: String,
        next_step: String,
        /// An allowed `return_to`, as the "Continue" link.
        continue_url: String,
    },
    /// `password_resets::reset_form`.
    ResetForm {
        action: String,
        token: String,
        error: String,
        return_to: String,
    },
    /// `verifications::confirm_page`.
    VerifyForm {
        action: String,
        token: String,
        return_to: String,
    },
}

/// A harmless stand-in of the same emptiness (`{{#if}}` must take the same branch).
fn tame(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "x" }
}

/// How many characters that matter to HTML structure `html` has.
fn structure(html: &str) -> [usize; 4] {
    ['<', '>', '"', '\''].map(|c| html.matches(c).count())
}

fn assert_escaped(what: &str, hostile: &str, tame: &str, values: &[&str]) {
    assert_eq!(
        structure(hostile),
        structure(tame),
        "{what}: a value changed the HTML's structure\n{hostile}"
    );
    let lower = hostile.to_ascii_lowercase();
    if values
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("<script"))
    {
        assert!(
            !lower.contains("<script"),
            "{what}: a raw <script\n{hostile}"
        );
    }
}

fn email_context(i: &Input) -> EmailContext {
    EmailContext {
        name: i.name.clone(),
        email: i.email.clone(),
        link: i.link.clone(),
        expires_in: i.expires_in.clone(),
        expires_hours: i.expires_hours,
        expires_minutes: i.expires_hours,
        code: i.code.clone(),
        code_expires_in: i.code.as_ref().map(|_| i.expires_in.clone()),
        code_expires_minutes: i.code.as_ref().map(|_| i.expires_hours),
        new_email: Some(i.email.clone()),
        cancel_link: i.link.clone(),
    }
}

fuzz_target!(|input: Input| {
    let t = &*TEMPLATES;
    let kind = JobKind::EMAILS[usize::from(input.kind) % JobKind::EMAILS.len()];
    let locale = Locale::parse(&input.locale).unwrap_or_else(|_| Locale::default_locale());
    let _ = t.resolve_locale(kind, &locale);

    let ctx = email_context(&input);
    let tame_ctx = EmailContext {
        name: tame(&ctx.name).into(),
        email: tame(&ctx.email).into(),
        link: ctx.link.as_deref().map(|l| tame(l).into()),
        expires_in: tame(&ctx.expires_in).into(),
        expires_hours: ctx.expires_hours,
        expires_minutes: ctx.expires_minutes,
        code: ctx.code.as_deref().map(|c| tame(c).into()),
        code_expires_in: ctx.code_expires_in.as_deref().map(|c| tame(c).into()),
        code_expires_minutes: ctx.code_expires_minutes,
        new_email: ctx.new_email.as_deref().map(|c| tame(c).into()),
        cancel_link: ctx.cancel_link.as_deref().map(|c| tame(c).into()),
    };
    let hostile = t
        .render_email(kind, &locale, &ctx)
        .expect("every shipped email renders");
    let harmless = t
        .render_email(kind, &locale, &tame_ctx)
        .expect("every shipped email renders");
    let values = [
        &*ctx.name,
        &*ctx.email,
        ctx.link.as_deref().unwrap_or_default(),
        &*ctx.expires_in,
        ctx.code.as_deref().unwrap_or_default(),
    ];
    assert_escaped("html part", &hostile.html, &harmless.html, &values);
    assert!(
        !hostile.subject.contains(['\r', '\n']),
        "a subject is one line: {:?}",
        hostile.subject
    );
    // Every text part names the address, unescaped, and the person, but for an invite (the
    // invitee's name may be a placeholder, so the invite never shows it).
    assert!(hostile.text.contains(&ctx.email));
    assert!(kind == JobKind::Invite || hostile.text.contains(&ctx.name));

    let (name, data, tame_data, values): (&str, _, _, Vec<&str>) = match &input.page {
        Page::Plain {
            title,
            message,
            next_step,
            continue_url,
        } => (
            "page",
            json!({"title": title, "message": message, "next_step": next_step, "continue_url": continue_url}),
            json!({"title": tame(title), "message": tame(message), "next_step": tame(next_step), "continue_url": tame(continue_url)}),
            vec![title, message, next_step, continue_url],
        ),
        Page::ResetForm {
            action,
            token,
            error,
            return_to,
        } => (
            "reset_form",
            json!({"action": action, "token": token, "min_length": 8, "max_length": 128, "error": error, "return_to": return_to}),
            json!({"action": tame(action), "token": tame(token), "min_length": 8, "max_length": 128, "error": tame(error), "return_to": tame(return_to)}),
            vec![action, token, error, return_to],
        ),
        Page::VerifyForm {
            action,
            token,
            return_to,
        } => (
            "verify_form",
            json!({"action": action, "token": token, "return_to": return_to}),
            json!({"action": tame(action), "token": tame(token), "return_to": tame(return_to)}),
            vec![action, token, return_to],
        ),
    };
    let hostile = t.render_page(name, &data).expect("every page renders");
    let harmless = t.render_page(name, &tame_data).expect("every page renders");
    assert_escaped(name, &hostile, &harmless, &values);
});
