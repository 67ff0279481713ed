//! `POST /v1/logins`: checks a password for the calling service. Every failure answers
//! alike after the same argon2 work; a locked address answers 429 before any hashing.

use super::*;

impl App {
    /// Checks a login for the calling service. Every failure (unknown address, no password,
    /// wrong password) gets the same 401 body after the same argon2 work, and counts towards the
    /// address's lockout; a locked address gets 429 before any hashing.
    pub(super) async fn login(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
        use mailroom::domain::Verified;
        let mut f = Fields::new(body, &["email", "password"]);
        let email = f.required("email", EmailAddress::parse);
        // Over 128 characters: 422 here, never hashed.
        let password = f.required("password", Password::parse_presented);
        f.finish()?;
        let (email, password) = (email.expect("checked"), password.expect("checked"));
        let now = self.clock.now();
        // Reserve the attempt before hashing: concurrent guesses cannot all pass the check.
        let reserved = match store::begin_login(
            &self.pool,
            &email,
            self.login_failure_limit,
            self.login_failure_window,
            now,
        )
        .await?
        {
            store::LoginSlot::Reserved(id) => id,
            store::LoginSlot::Locked(until) => {
                mailroom::metrics::count(&self.metrics.logins, "locked");
                // Rounded up: a client that waits exactly this long is let in.
                let secs = (until - now).num_milliseconds().max(1000) as u64;
                return Err(ApiError::TooManyAttempts(secs.div_ceil(1000)));
            }
        };
        let user = store::login_user(&self.pool, &email).await?;
        let phc = user.as_ref().and_then(|u| u.hashed_password.clone());
        let presented = password.clone();
        let checked = self
            .hashes
            .run(move || {
                Ok::<_, std::convert::Infallible>(match &phc {
                    Some(h) => presented.check(h),
                    // The same work as a real check: timing must not tell a missing user.
                    None => {
                        presented.check_against_nothing();
                        Verified::No
                    }
                })
            })
            .await;
        let checked = match checked {
            Ok(v) => v,
            Err(e) => {
                // Not checked: not a failure of the person's, so the reservation goes.
                let _ = store::finish_login(&self.pool, reserved, None).await;
                if matches!(e, crate::hashing::HashError::Busy(_)) {
                    mailroom::metrics::count(&self.metrics.logins, "busy");
                    mailroom::metrics::count(&self.metrics.password_hashes, "refused");
                    return Err(ApiError::Busy);
                }
                return Err(e.into());
            }
        };
        mailroom::metrics::count(&self.metrics.password_hashes, "done");
        let user = match (user, checked) {
            (Some(u), Verified::Yes | Verified::YesButStale) => u,
            (u, _) => {
                let reason = match &u {
                    None => "unknown_address",
                    Some(u) if u.hashed_password.is_none() => "no_password",
                    Some(_) => "wrong_password",
                };
                store::finish_login(&self.pool, reserved, Some(reason)).await?;
                mailroom::metrics::count(&self.metrics.logins, "invalid");
                return Err(ApiError::InvalidCredentials);
            }
        };
        store::finish_login(&self.pool, reserved, None).await?;
        if checked == Verified::YesButStale
            && let Some(old) = &user.hashed_password
        {
            // Best effort: the login succeeds whether or not the upgrade can run now.
            match self.hash_password(password).await {
                Ok(new) => match store::upgrade_password_hash(&self.pool, user.id, old, &new).await
                {
                    Ok(true) => {
                        tracing::info!(user_id = %user.id, "password re-hashed with today's parameters")
                    }
                    Ok(false) => {}
                    // The login is right either way; the next one tries again.
                    Err(e) => tracing::warn!(error = %e, "could not store the re-hash"),
                },
                Err(e) => tracing::debug!(error = %e, "re-hash skipped; next login tries again"),
            }
        }
        mailroom::metrics::count(&self.metrics.logins, "ok");
        Ok(json_response(
            StatusCode::OK,
            &json!({"user_id": user.id, "email": user.email, "email_verified": user.email_verified}),
        ))
    }
}
