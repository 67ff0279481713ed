//! Handlebars templates: the emails (`templates/email/<locale>/<kind>.{subject,txt,html}.hbs`)
//! and the small HTML pages ingest serves (`templates/pages/*.html.hbs`). Owns loading,
//! strict-mode compilation, locale fallback and escaping: HTML parts and pages escape every
//! value, so a user named `<b>` arrives as `&lt;b&gt;`; subjects and text parts are not HTML and
//! are not escaped, and a subject is folded onto one line so that no value can add a header.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::domain::Locale;
use crate::job::JobKind;

/// The default of `TEMPLATES_DIR`: `templates` in the working directory, where `scripts/up`
/// runs the binaries (the Docker image and compose.yaml set `/app/templates`).
pub const DEFAULT_DIR: &str = "templates";

/// This checkout's `templates/`, known at build time. Only a fallback for the default (see
/// [`resolve_dir`]), so that a development build finds its templates from any working
/// directory (the tests run the binaries from their crates' folders); `--help` shows the
/// default, never this path, and an installed binary does not depend on it.
const CHECKOUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../templates");

/// The folder to load: `dir` itself, except that the default, when the working directory has
/// no `templates/`, falls back to this checkout's.
pub fn resolve_dir(dir: &Path) -> PathBuf {
    if dir == Path::new(DEFAULT_DIR) && !dir.is_dir() && Path::new(CHECKOUT_DIR).is_dir() {
        PathBuf::from(CHECKOUT_DIR)
    } else {
        dir.to_path_buf()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read templates from {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name} does not compile: {message}")]
    Compile { name: String, message: String },
    #[error("no template {kind}.{part} for locale {locale} or any fallback")]
    Missing {
        kind: String,
        part: &'static str,
        locale: String,
    },
    #[error("template {name} failed to render: {message}")]
    Render { name: String, message: String },
}

/// What every email template may use. Strict mode makes any other name an error.
#[derive(Debug, Clone, Serialize)]
pub struct EmailContext {
    /// The recipient's display name, as they gave it.
    pub name: String,
    pub email: String,
    /// The link to follow (verification or reset), with its token; null when the email
    /// carries a code only (`"method": "code"`).
    pub link: Option<String>,
    /// How long the link works, in English words ("24 hours"); the code's, without a link.
    pub expires_in: String,
    /// The same in whole hours (rounded up), for templates in other languages.
    pub expires_hours: u64,
    /// The same in whole minutes (rounded up), for short links (sign-in) in other languages.
    pub expires_minutes: u64,
    /// The one-time code to type, when the email carries one (`"code"` or `"both"`); else null.
    pub code: Option<String>,
    /// How long the code works, in English words ("15 minutes"); null without a code.
    pub code_expires_in: Option<String>,
    /// The same in whole minutes (rounded up), for templates in other languages.
    pub code_expires_minutes: Option<u64>,
    /// An email change's new address, masked (`n***@example.com`): in the notices to the old
    /// address; else null.
    pub new_email: Option<String>,
    /// The link that cancels an email change: in the notice to the old address; else null.
    pub cancel_link: Option<String>,
}

impl EmailContext {
    /// The sample as each method sends it: a link only, a code only, both.
    pub fn samples() -> [Self; 3] {
        let both = Self::sample();
        let link_only = Self {
            code: None,
            code_expires_in: None,
            code_expires_minutes: None,
            ..both.clone()
        };
        let code_only = Self {
            link: None,
            expires_in: "15 minutes".into(),
            expires_hours: 1,
            expires_minutes: 15,
            ..both.clone()
        };
        [link_only, code_only, both]
    }

    /// Data for previews and `templates check`, including characters that must be escaped.
    pub fn sample() -> Self {
        Self {
            name: "Ada <b>Lovelace</b> & Co".into(),
            email: "ada@example.com".into(),
            link: Some("http://127.0.0.1:8080/verify-email?token=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()),
            expires_in: "24 hours".into(),
            expires_hours: 24,
            expires_minutes: 1440,
            code: Some("042917".into()),
            code_expires_in: Some("15 minutes".into()),
            code_expires_minutes: Some(15),
            new_email: Some("n***@example.com".into()),
            cancel_link: Some("http://127.0.0.1:8080/cancel-email-change?token=fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    /// Escapes values: HTML parts and pages.
    html: Handlebars<'static>,
    /// Does not escape: subjects and text parts.
    plain: Handlebars<'static>,
    dir: PathBuf,
}

const PARTS: [&str; 3] = ["subject", "txt", "html"];

impl Templates {
    /// Loads and compiles every `*.hbs` under `dir`. A template that does not compile is an
    /// error here, at start-up, rather than at the first send.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, TemplateError> {
        let dir = resolve_dir(dir.as_ref());
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(escape_html);
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut files = Vec::new();
        walk(&dir, &mut files)?;
        if files.is_empty() {
            return Err(TemplateError::Io {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no *.hbs files"),
            });
        }
        for path in files {
            let rel = path
                .strip_prefix(&dir)
                .expect("walk stays under dir")
                .to_string_lossy()
                .replace('\\', "/");
            let name = rel.trim_end_matches(".hbs").to_owned();
            let source = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
                path: path.clone(),
                source,
            })?;
            let escapes = name.ends_with(".html");
            let reg = if escapes { &mut html } else { &mut plain };
            reg.register_template_string(&name, source)
                .map_err(|e| TemplateError::Compile {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(Self { html, plain, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn has(&self, name: &str) -> bool {
        self.html.has_template(name) || self.plain.has_template(name)
    }

    /// The locale whose template is used for this kind, after falling back.
    pub fn resolve_locale(&self, kind: JobKind, locale: &Locale) -> Option<String> {
        locale
            .fallback_chain()
            .into_iter()
            .find(|l| self.has(&format!("email/{l}/{}.subject", kind.as_str())))
    }

    /// Renders the three parts, each from the first locale in the fallback chain that has it.
    pub fn render_email(
        &self,
        kind: JobKind,
        locale: &Locale,
        ctx: &EmailContext,
    ) -> Result<RenderedEmail, TemplateError> {
        let part = |part: &'static str| -> Result<String, TemplateError> {
            let name = locale
                .fallback_chain()
                .into_iter()
                .map(|l| format!("email/{l}/{}.{part}", kind.as_str()))
                .find(|n| self.has(n))
                .ok_or_else(|| TemplateError::Missing {
                    kind: kind.as_str().into(),
                    part,
                    locale: locale.as_str().into(),
                })?;
            let reg = if part == "html" {
                &self.html
            } else {
                &self.plain
            };
            reg.render(&name, ctx).map_err(|e| TemplateError::Render {
                name,
                message: e.to_string(),
            })
        };
        let subject = part("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RenderedEmail {
            subject,
            text: part("txt")?,
            html: part("html")?,
        })
    }

    /// Renders a page such as `verify_email_done`; values are HTML-escaped.
    pub fn render_page(
        &self,
        page: &str,
        ctx: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let name = format!("pages/{page}.html");
        self.html
            .render(&name, ctx)
            .map_err(|e| TemplateError::Render {
                name,
                message: e.to_string(),
            })
    }

    /// The locales that have at least one email template.
    pub fn locales(&self) -> BTreeSet<String> {
        self.html
            .get_templates()
            .keys()
            .chain(self.plain.get_templates().keys())
            .filter_map(|n| n.strip_prefix("email/"))
            .filter_map(|n| n.split('/').next())
            .map(str::to_owned)
            .collect()
    }

    /// Renders every email of every locale with sample data, in strict mode: a template that
    /// uses a name the context does not have fails here. Returns what was checked.
    pub fn check(&self) -> Result<Vec<String>, TemplateError> {
        let mut checked = Vec::new();
        for locale in self.locales() {
            let l = Locale::parse(&locale).map_err(|e| TemplateError::Compile {
                name: format!("email/{locale}"),
                message: format!("folder name is not a locale: {e}"),
            })?;
            for kind in JobKind::EMAILS {
                let own = PARTS
                    .iter()
                    .any(|p| self.has(&format!("email/{locale}/{}.{p}", kind.as_str())));
                if own {
                    // Each of what an email may carry: a link, a code, or both.
                    for ctx in EmailContext::samples() {
                        self.render_email(kind, &l, &ctx)?;
                    }
                    checked.push(format!("{locale}/{}", kind.as_str()));
                }
            }
        }
        Ok(checked)
    }
}

/// Escapes the five characters that matter in HTML text and quoted attributes. (Handlebars'
/// default also escapes `=` and backticks, which mangles links without making them safer.)
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TemplateError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| TemplateError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "hbs") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        Templates::load(DEFAULT_DIR).unwrap()
    }

    #[test]
    fn html_is_escaped_text_is_not() {
        let t = templates();
        let e = t
            .render_email(
                JobKind::Verification,
                &Locale::default_locale(),
                &EmailContext::sample(),
            )
            .unwrap();
        assert!(e.html.contains("Ada &lt;b&gt;Lovelace&lt;/b&gt; &amp; Co"));
        assert!(!e.html.contains("<b>Lovelace"));
        assert!(e.text.contains("Ada <b>Lovelace</b> & Co"));
        assert!(
            e.html
                .contains(EmailContext::sample().link.as_deref().unwrap())
        );
        assert!(!e.subject.contains('\n'));
    }

    #[test]
    fn a_code_shows_only_when_the_email_carries_one_and_so_does_a_link() {
        let t = templates();
        for kind in [
            JobKind::Verification,
            JobKind::PasswordReset,
            JobKind::SignIn,
        ] {
            for locale in ["en", "de"] {
                let l = Locale::parse(locale).unwrap();
                let [link_only, code_only, both] = EmailContext::samples();
                let link = both.link.clone().unwrap();
                let e = t.render_email(kind, &l, &link_only).unwrap();
                assert!(
                    e.text.contains(&link) && !e.text.contains("042917"),
                    "{kind} {locale}"
                );
                let e = t.render_email(kind, &l, &code_only).unwrap();
                assert!(
                    !e.text.contains(&link) && e.text.contains("042917"),
                    "{kind} {locale}"
                );
                assert!(
                    !e.html.contains(&link) && e.html.contains("042917"),
                    "{kind} {locale}"
                );
                let e = t.render_email(kind, &l, &both).unwrap();
                assert!(
                    e.text.contains(&link) && e.text.contains("042917"),
                    "{kind} {locale}"
                );
                assert!(
                    e.html.contains(&link) && e.html.contains("042917"),
                    "{kind} {locale}"
                );
            }
        }
    }

    #[test]
    fn unknown_locale_falls_back() {
        let t = templates();
        let fr = Locale::parse("zz-ZZ").unwrap();
        assert_eq!(
            t.resolve_locale(JobKind::Verification, &fr).as_deref(),
            Some("en")
        );
    }

    #[test]
    fn every_shipped_template_passes_check() {
        let checked = templates().check().unwrap();
        assert!(checked.contains(&"en/verification".to_string()));
    }

    #[test]
    fn strict_mode_refuses_unknown_names() {
        let dir = std::env::temp_dir().join(format!("mailroom-tpl-{}", uuid::Uuid::new_v4()));
        let en = dir.join("email/en");
        std::fs::create_dir_all(&en).unwrap();
        std::fs::write(en.join("verification.subject.hbs"), "Hi {{nmae}}").unwrap();
        std::fs::write(en.join("verification.txt.hbs"), "{{link}}").unwrap();
        std::fs::write(en.join("verification.html.hbs"), "{{link}}").unwrap();
        let err = Templates::load(&dir).unwrap().check().unwrap_err();
        assert!(err.to_string().contains("verification.subject"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
