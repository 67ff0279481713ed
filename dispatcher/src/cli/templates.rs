//! `dispatcher templates …`: checking every email template in strict mode, and rendering one
//! with sample data to preview it. The templates themselves are in [`mailroom::templates`].

use std::path::PathBuf;

use mailroom::templates::{EmailContext, Templates};

/// `dispatcher templates …`: the folder to load, and what to do with it.
#[derive(clap::Args, Debug)]
pub struct TemplatesArgs {
    /// Folder of the handlebars templates.
    #[arg(long, global = true, env = "TEMPLATES_DIR", default_value = mailroom::templates::DEFAULT_DIR)]
    pub templates_dir: PathBuf,
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TemplatesCommand {
    /// Compile every template in strict mode and render each email of each locale with sample
    /// data; fails on a template that does not compile or uses a name it is not given.
    Check,
    /// Print the subject, text and HTML of one email rendered with sample data.
    Render {
        /// The email: verification, password_reset, password_changed, sign_in, invite,
        /// email_change_confirm, email_change_notice or email_changed.
        kind: String,
        /// Locale to render (falls back like a real send: pt-BR → pt → en).
        #[arg(long, default_value = "en")]
        locale: String,
    },
}

/// Runs `dispatcher templates …`.
pub fn main(args: TemplatesArgs) -> anyhow::Result<()> {
    let t = Templates::load(&args.templates_dir)?;
    match args.command {
        TemplatesCommand::Check => check(&t),
        TemplatesCommand::Render { kind, locale } => render(&t, &kind, &locale),
    }
}

fn check(t: &Templates) -> anyhow::Result<()> {
    let checked = t.check()?;
    for c in &checked {
        println!("ok  {c}");
    }
    println!(
        "{} emails in {} locales render in strict mode",
        checked.len(),
        t.locales().len()
    );
    Ok(())
}

fn render(t: &Templates, kind: &str, locale: &str) -> anyhow::Result<()> {
    let emails = mailroom::job::JobKind::EMAILS;
    let k = mailroom::job::JobKind::parse(kind)
        .filter(|k| k.is_email())
        .ok_or_else(|| {
            let names: Vec<&str> = emails.iter().map(|k| k.as_str()).collect();
            anyhow::anyhow!("unknown kind '{kind}': use one of {}", names.join(", "))
        })?;
    let l = mailroom::domain::Locale::parse(locale)
        .map_err(|e| anyhow::anyhow!("--locale '{locale}' {e}"))?;
    let used = t.resolve_locale(k, &l).unwrap_or_else(|| "none".into());
    let e = t.render_email(k, &l, &EmailContext::sample())?;
    println!(
        "Locale:  {used}{}",
        if used != l.as_str() {
            format!(" (fallback for {l})", l = l.as_str())
        } else {
            String::new()
        }
    );
    println!("Subject: {}\n", e.subject);
    println!(
        "--- text ---\n{}\n--- html ---\n{}",
        e.text.trim_end(),
        e.html.trim_end()
    );
    Ok(())
}
