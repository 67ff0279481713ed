//! Verification links: `POST /v1/verifications`, and `/verify-email` — GET verifies
//! (`VERIFY_LINK_MODE=open`) or shows a confirm button (`click`), POST is that button, HEAD
//! never consumes.

use super::*;

impl App {
    pub(super) async fn verify_api(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["token"]);
        let token = f.required("token", Token::parse);
        f.finish()?;
        let token = token.expect("checked");
        match store::consume_verification_token(
            &self.pool,
            &token.hash(),
            &self.webhooks,
            self.clock.now(),
        )
        .await?
        {
            Verification::Verified { user_id, email } => {
                // Its webhook event is in the outbox: let the relay take it now.
                self.relay_wake.notify_one();
                tracing::info!(%user_id, "email verified");
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"user_id": user_id, "email": email}),
                ))
            }
            Verification::Expired => Err(ApiError::Gone {
                code: "token_expired",
                message: "this verification link has expired; ask for a new one".into(),
            }),
            Verification::Used => Err(ApiError::Gone {
                code: "token_used",
                message: "this verification link was already used".into(),
            }),
            Verification::Unknown => Err(ApiError::NotFound {
                code: "token_unknown",
                message: "no such verification token (a newer link may have replaced it)".into(),
            }),
        }
    }

    /// HEAD of a verification link: the status the link would get, without consuming it.
    pub(super) async fn verify_head(&self, parts: &Parts) -> Resp {
        let status = match query_param(parts, "token").map(|t| Token::parse(&t)) {
            None | Some(Err(_)) => StatusCode::BAD_REQUEST,
            Some(Ok(t)) => match store::token_state(
                &self.pool,
                store::TokenKind::Verification,
                &t.hash(),
                self.clock.now(),
            )
            .await
            {
                Ok(store::TokenState::Valid) => StatusCode::OK,
                Ok(store::TokenState::Used | store::TokenState::Expired) => StatusCode::GONE,
                Ok(store::TokenState::Unknown) => StatusCode::NOT_FOUND,
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        };
        html_response(status, String::new())
    }

    /// `VERIFY_LINK_MODE=click`: the link opens a page with a button; only its POST verifies.
    /// Reading the token here never consumes it.
    pub(super) async fn verify_confirm_page(&self, parts: &Parts) -> Resp {
        let Some(token) = query_param(parts, "token").and_then(|t| Token::parse(&t).ok()) else {
            return self.verify_page(None).await;
        };
        match store::token_state(
            &self.pool,
            store::TokenKind::Verification,
            &token.hash(),
            self.clock.now(),
        )
        .await
        {
            Ok(store::TokenState::Valid) => {
                let html = self
                    .templates
                    .render_page(
                        "verify_form",
                        &json!({"action": "/verify-email", "token": token.expose()}),
                    )
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "verify form template failed");
                        "<!doctype html><title>Error</title><h1>Error</h1>".into()
                    });
                html_response(StatusCode::OK, html)
            }
            // Anything else: the same page a click would give, which consumes nothing here.
            _ => self.verify_page(Some(token.expose().to_owned())).await,
        }
    }

    /// The page a person sees after following (or, in click mode, confirming) the link in the
    /// email. Always a page, never a JSON error or a 500: a database problem gets a "try
    /// again" page.
    pub(super) async fn verify_page(&self, token: Option<String>) -> Resp {
        let outcome = match token.as_deref().map(Token::parse) {
            None | Some(Err(_)) => Err((
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The verification link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            )),
            Some(Ok(t)) => {
                match store::consume_verification_token(
                    &self.pool,
                    &t.hash(),
                    &self.webhooks,
                    self.clock.now(),
                )
                .await
                {
                    Ok(Verification::Verified { .. }) => {
                        self.relay_wake.notify_one(); // the user.verified event
                        Ok((
                            "Your email address is confirmed",
                            "Thank you: your address is verified.",
                            "You can close this page and sign in.",
                        ))
                    }
                    Ok(Verification::Used) => Err((
                        StatusCode::GONE,
                        "This link was already used",
                        "Your address was confirmed with this link before.",
                        "Nothing else to do: you can sign in.",
                    )),
                    Ok(Verification::Expired) => Err((
                        StatusCode::GONE,
                        "This link has expired",
                        "Verification links work for a limited time.",
                        "Sign in or use the app to ask for a new verification email.",
                    )),
                    Ok(Verification::Unknown) => Err((
                        StatusCode::NOT_FOUND,
                        "This link is not valid",
                        "We do not know this link. If you asked for several emails, only the newest link works.",
                        "Use the link in the most recent email, or ask for a new one.",
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "verification page could not reach the database");
                        Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Please try again in a moment",
                            "We could not check your link just now.",
                            "Reload this page in a minute; the link still works.",
                        ))
                    }
                }
            }
        };
        let (status, (title, message, next)) = match outcome {
            Ok(t) => (StatusCode::OK, t),
            Err((s, a, b, c)) => (s, (a, b, c)),
        };
        self.page(status, title, message, next)
    }
}
