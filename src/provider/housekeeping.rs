//! What the provider does on its own, on every replica: every second it mirrors other
//! replicas' revocations and checks the store; now and then it reports secret use, sweeps
//! expired rows, ends the sessions and grants of people who left (telling their clients,
//! back-channel logout) and revokes the grants of deleted clients.

use super::state::ProviderState;
use crate::people::Standing;
use crate::store::StoreError;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl ProviderState {
    /// Runs forever: mirrors other replicas' revocations every second, reports secret use
    /// every `secret_use_report_interval` and sweeps expired rows from the store every minute.
    pub async fn housekeeping(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut ticks: u64 = 0;
        let report_every = self.secret_use_report_interval.as_secs().max(1);
        loop {
            tick.tick().await;
            let up = match self.revocations.sync(now()).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read revocations from the grant store");
                    false
                }
            };
            self.metrics.store_up.set(up as i64);
            self.store_up.store(up, std::sync::atomic::Ordering::Relaxed);
            if ticks.is_multiple_of(report_every) {
                self.secret_uses.report(&self.store).await;
            }
            if ticks.is_multiple_of(60) {
                self.end_grants_of_deleted_clients().await;
                self.end_access_of_people_who_left().await;
                match self.store.sweep(now()).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "expired grants swept"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot sweep the grant store"),
                }
            }
            ticks += 1;
        }
    }

    /// Ends the sessions and refresh families of people who left, and the sessions started
    /// with a password that has changed since; housekeeping does it every minute, on every
    /// replica, so leaving takes effect within a minute even where nobody presents a token.
    pub async fn end_access_of_people_who_left(&self) {
        let result = async {
            let now = now();
            let mut ended = 0;
            for (subject, credential) in self.store.people_holding_grants(now).await? {
                match self.standing(&subject, credential.as_deref()) {
                    Standing::Stays => {}
                    Standing::NewPassword => {
                        let ending = match credential.as_deref() {
                            Some(c) => self.store.sessions_with(&subject, c).await?,
                            None => Vec::new(),
                        };
                        ended += self.store.end_sessions_of(&subject, credential.as_deref()).await?;
                        // Their clients are told (back-channel logout).
                        for id in ending {
                            super::backchannel::session_ended(self, super::browser_flow::session_sid(&id));
                        }
                    }
                    Standing::Left => {
                        ended += self.store.end_sessions_of(&subject, None).await?;
                        // The clients of the sessions just ended are told.
                        super::backchannel::person_left(self, subject.clone());
                        let revoked = self.store.revoke_families_of_person(&subject, now).await?;
                        ended += revoked.len() as u64;
                        self.revocations.remember(&revoked);
                    }
                }
            }
            Ok::<_, StoreError>(ended)
        };
        match result.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "sessions and tokens of people who left ended"),
            Err(e) => tracing::warn!(error = %e, "cannot end the access of people who left"),
        }
    }

    /// Revokes the refresh families (and their access tokens) of OAuthClient objects that no
    /// longer exist; housekeeping does it every minute. Nothing happens before the registry
    /// has read every source once, so a replica that is still starting revokes nothing.
    pub async fn end_grants_of_deleted_clients(&self) {
        let snapshot = self.registry.load();
        if !snapshot.complete {
            return;
        }
        match self
            .store
            .revoke_families_of_deleted_clients(&snapshot.client_uids, now())
            .await
        {
            Ok(revoked) => {
                if !revoked.is_empty() {
                    tracing::info!(
                        access_tokens = revoked.len(),
                        "refresh families of deleted clients revoked"
                    );
                }
                self.revocations.remember(&revoked);
            }
            Err(e) => tracing::warn!(error = %e, "cannot revoke the grants of deleted clients"),
        }
    }
}
