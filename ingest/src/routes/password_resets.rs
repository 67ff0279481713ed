//! Password resets as the person sees them: the page the reset email links to (which only
//! looks at the token), its form, and `POST /v1/password-resets/confirm` (JSON or form),
//! which checks the token before hashing and consumes it atomically.

use super::*;

impl App {
    /// Checks the token, hashes the new password and consumes the token. Returns what happened,
    /// for the JSON and the HTML form alike.
    pub(super) async fn reset(
        &self,
        token: &Token,
        password: Password,
    ) -> Result<store::PasswordReset, ApiError> {
        // The token first: it is one indexed read, and a made-up, used or expired token must
        // not cost an argon2 hash (anyone can post here, without an API key).
        match store::token_state(
            &self.pool,
            store::TokenKind::Reset,
            &token.hash(),
            self.clock.now(),
        )
        .await?
        {
            store::TokenState::Valid => {}
            store::TokenState::Expired => return Ok(store::PasswordReset::Expired),
            store::TokenState::Used => return Ok(store::PasswordReset::Used),
            store::TokenState::Unknown => return Ok(store::PasswordReset::Unknown),
        }
        let hash = self.hash_password(password).await?;
        // Consuming checks the token again, atomically: it may have been used meanwhile.
        let r = store::reset_password(
            &self.pool,
            &token.hash(),
            &hash,
            &self.webhooks,
            self.clock.now(),
        )
        .await?;
        if let store::PasswordReset::Changed { user_id, .. } = &r {
            self.relay_wake.notify_one();
            tracing::info!(%user_id, "password changed");
        }
        Ok(r)
    }

    pub(super) async fn confirm_reset_api(
        &self,
        body: Map<String, Value>,
    ) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["token", "password"]);
        let token = f.required("token", Token::parse);
        let password = f.required("password", Password::parse);
        f.finish()?;
        match self
            .reset(&token.expect("checked"), password.expect("checked"))
            .await?
        {
            store::PasswordReset::Changed { user_id, .. } => {
                Ok(json_response(StatusCode::OK, &json!({"user_id": user_id})))
            }
            store::PasswordReset::Expired => Err(ApiError::Gone {
                code: "token_expired",
                message: "this reset link has expired; ask for a new one".into(),
            }),
            store::PasswordReset::Used => Err(ApiError::Gone {
                code: "token_used",
                message: "this reset link was already used".into(),
            }),
            store::PasswordReset::Unknown => Err(ApiError::NotFound {
                code: "token_unknown",
                message: "no such reset token (a newer link may have replaced it)".into(),
            }),
        }
    }

    /// The reset form's POST: answers pages, never JSON.
    pub(super) async fn confirm_reset_form(&self, form: Map<String, Value>) -> Resp {
        let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let Ok(token) = Token::parse(&get("token")) else {
            return self.page(
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The reset link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            );
        };
        let password = match Password::parse(&get("password")) {
            Ok(p) => p,
            Err(e) => {
                return self.reset_form(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &token,
                    Some(&format!("The password {e}.")),
                );
            }
        };
        match self.reset(&token, password).await {
            Ok(store::PasswordReset::Changed { .. }) => self.page(
                StatusCode::OK,
                "Your password was changed",
                "You can now sign in with your new password.",
                "We also sent you an email about the change.",
            ),
            Ok(store::PasswordReset::Used) => self.page(
                StatusCode::GONE,
                "This link was already used",
                "Your password was changed with this link before.",
                "If you need to change it again, ask for a new reset email.",
            ),
            Ok(store::PasswordReset::Expired) => self.page(
                StatusCode::GONE,
                "This link has expired",
                "Reset links work for a limited time.",
                "Ask for a new reset email.",
            ),
            Ok(store::PasswordReset::Unknown) => self.page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "We do not know this link. If you asked for several emails, only the newest link works.",
                "Use the link in the most recent email, or ask for a new one.",
            ),
            Err(e) => {
                let status = e.status();
                tracing::warn!(error = %e, "reset form failed");
                let mut resp = self.page(
                    status,
                    "Please try again in a moment",
                    "We could not change your password just now.",
                    "Go back and submit the form again in a minute; the link still works.",
                );
                if matches!(e, ApiError::Busy) {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, "1".parse().expect("static"));
                }
                resp
            }
        }
    }

    /// The page the reset email links to. It only looks at the token, never consumes it:
    /// mail scanners open links, and a person must still be able to use theirs afterwards.
    pub(super) async fn reset_page(&self, parts: &Parts) -> Resp {
        let token = query_param(parts, "token").and_then(|t| Token::parse(&t).ok());
        let Some(token) = token else {
            return self.page(
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The reset link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            );
        };
        match store::token_state(
            &self.pool,
            store::TokenKind::Reset,
            &token.hash(),
            self.clock.now(),
        )
        .await
        {
            Ok(store::TokenState::Valid) => self.reset_form(StatusCode::OK, &token, None),
            Ok(store::TokenState::Used) => self.page(
                StatusCode::GONE,
                "This link was already used",
                "Your password was changed with this link before.",
                "If you need to change it again, ask for a new reset email.",
            ),
            Ok(store::TokenState::Expired) => self.page(
                StatusCode::GONE,
                "This link has expired",
                "Reset links work for a limited time.",
                "Ask for a new reset email.",
            ),
            Ok(store::TokenState::Unknown) => self.page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "We do not know this link. If you asked for several emails, only the newest link works.",
                "Use the link in the most recent email, or ask for a new one.",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "reset page could not reach the database");
                self.page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Please try again in a moment",
                    "We could not check your link just now.",
                    "Reload this page in a minute; the link still works.",
                )
            }
        }
    }

    pub(super) fn reset_form(
        &self,
        status: StatusCode,
        token: &Token,
        error: Option<&str>,
    ) -> Resp {
        let html = self
            .templates
            .render_page(
                "reset_form",
                &json!({
                    "action": "/v1/password-resets/confirm",
                    "token": token.expose(),
                    "min_length": 8,
                    "max_length": 128,
                    "error": error.unwrap_or(""),
                }),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reset form template failed");
                "<!doctype html><title>Error</title><h1>Error</h1>".into()
            });
        html_response(status, html)
    }
}
