//! Consent as it happens: granting, revoking and expiring grants with signed receipts, and
//! the background sweep that records expiries and shreds tenancies whose retention ran
//! out. The rules themselves live in [`crate::consent`]; this module is their I/O.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::consent::receipt::ReceiptSigner;
use crate::consent::{DAY_MS, GrantRecord, Terms, categories_of};
use crate::devices::random_string;
use crate::lifecycle::Lifecycle;
use crate::store::{ReceiptRecord, RecipientRecord, Store, StoreError};
use hearth_model::consent::ReceiptEvent;

/// How often the sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Everything a receipt says, beside the grant itself.
pub struct ReceiptContext<'a> {
    pub jurisdiction: &'a str,
    pub subject_name: &'a str,
    pub recipient: &'a RecipientRecord,
}

/// A fresh random id with a prefix, e.g. `g_...` for grants.
pub fn new_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}_{}", random_string(ID_ALPHABET, 20)?))
}

/// The receipt's claims: the Kantara Consent Receipt v1.1 fields that fit a home hub,
/// plus `hearth`, which carries the exact terms machines need.
pub fn receipt_claims(
    signer: &ReceiptSigner,
    ctx: &ReceiptContext<'_>,
    grant: &GrantRecord,
    receipt_id: &str,
    event: ReceiptEvent,
    at: i64,
) -> Json {
    let t: &Terms = &grant.terms;
    let mut pii: Vec<String> = t.categories.iter().cloned().collect();
    pii.extend(t.metrics.iter().cloned());
    let mut categories: std::collections::BTreeSet<String> = t.categories.clone();
    for m in &t.metrics {
        categories.extend(categories_of(m).map(str::to_owned));
    }
    json!({
        "version": "KI-CR-v1.1.0",
        "jurisdiction": ctx.jurisdiction,
        "consentTimestamp": at / 1000,
        "iat": at / 1000,
        "collectionMethod": "Hearth consent inbox, decided by the data subject",
        "consentReceiptID": receipt_id,
        "publicKey": signer.published()["public_key"],
        "language": "en",
        "piiPrincipalId": ctx.subject_name,
        "piiControllers": [{
            "piiController": ctx.recipient.name,
            "onBehalf": false,
            "contact": ctx.recipient.name,
            "controllerKind": ctx.recipient.kind,
        }],
        "policyUrl": null,
        "services": [{
            "service": "Home data sharing",
            "purposes": [{
                "purpose": t.purpose,
                "purposeCategory": categories,
                "consentType": "EXPLICIT",
                "piiCategory": pii,
                "primaryPurpose": true,
                "termination": format!("on revocation by the data subject, or at expiry ({} s since the epoch)", grant.expires_ms / 1000),
                "thirdPartyDisclosure": true,
                "thirdPartyName": ctx.recipient.name,
            }],
        }],
        "sensitive": false,
        "spiCat": [],
        "hearth": {
            "event": event,
            "grantId": grant.id,
            "requestId": grant.request_id,
            "recipientId": grant.recipient_id,
            "granularity": t.granularity,
            "categories": t.categories,
            "metrics": t.metrics,
            "window": { "from": t.window_from, "to": t.window_to },
            "grantedAt": grant.created_ms,
            "expires": grant.expires_ms,
            "offer": t.offer,
        },
    })
}

/// Signs a receipt for `event` on `grant`.
pub fn make_receipt(
    signer: &ReceiptSigner,
    ctx: &ReceiptContext<'_>,
    grant: &GrantRecord,
    event: ReceiptEvent,
    at: i64,
) -> Result<ReceiptRecord, StoreError> {
    let id = new_id("rcpt")?;
    let jws = signer.sign(&receipt_claims(signer, ctx, grant, &id, event, at));
    Ok(ReceiptRecord { id, grant_id: grant.id.clone(), event, created: at, jws })
}

/// A grant's expiry time from its terms.
pub fn expiry(terms: &Terms, granted_at: i64) -> i64 {
    granted_at.saturating_add(i64::from(terms.duration_days) * DAY_MS)
}

/// Records an expiry receipt for every grant that ran out, and shreds every tenancy whose
/// retention ended (through `lifecycle`, so that nothing of it stays alive in memory).
/// Errors are logged; the next sweep tries again.
pub async fn sweep(
    (store, lifecycle): (&Store, &Lifecycle),
    signer: &ReceiptSigner,
    jurisdiction: &str,
    now: i64,
) -> Result<(), StoreError> {
    for grant in store.grants_expired_unrecorded(now).await? {
        let Some(recipient) = store.recipient_any(&grant.recipient_id).await? else { continue };
        let subject = store.user_name(grant.subject_id).await?.unwrap_or_default();
        let ctx = ReceiptContext { jurisdiction, subject_name: &subject, recipient: &recipient };
        let receipt = make_receipt(signer, &ctx, &grant, ReceiptEvent::Expired, grant.expires_ms)?;
        if store.end_grant(&grant, &receipt, grant.expires_ms).await? {
            tracing::info!(grant = %grant.id, "grant expired; receipt recorded");
        }
    }
    for tenancy in store.tenancies_due_for_shredding(now).await? {
        if lifecycle.shred_tenancy(tenancy, now).await? {
            tracing::warn!(tenancy, "retention ended: the tenancy's key was destroyed and its data is gone");
        }
    }
    Ok(())
}

/// Runs [`sweep`] at start and then every minute until `shutdown`, and tells `lifecycle`
/// each tenancy whose end the clock reaches, at that moment. (A tenancy that ended while
/// the hub was stopped needs nothing: its devices are refused at login.)
pub async fn sweep_periodically(
    (store, lifecycle): (Store, Lifecycle),
    signer: Arc<ReceiptSigner>,
    jurisdiction: String,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut ended: HashSet<i64> = store.ownership().rule.ended_by(clock.now_ms()).collect();
    loop {
        let now = clock.now_ms();
        let newly: Vec<i64> = store.ownership().rule.ended_by(now).filter(|t| !ended.contains(t)).collect();
        for tenancy in newly {
            ended.insert(tenancy);
            lifecycle.tenancy_ended(tenancy).await;
        }
        if let Err(error) = sweep((&store, &lifecycle), &signer, &jurisdiction, now).await {
            tracing::warn!(error = %crate::error::chain(&error), "consent sweep failed; will retry");
        }
        let next_sweep = now + SWEEP_EVERY.as_millis() as i64;
        let next = store.ownership().rule.next_end_after(now).map_or(next_sweep, |end| end.min(next_sweep));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep_until(next) => {}
            () = lifecycle.ends_changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::receipt;
    use crate::consent::{Granularity, Offer};
    use crate::crypto::Key;

    #[tokio::test]
    async fn expiry_is_recorded_once_with_a_signed_receipt_without_anyone_acting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        let lifecycle = Lifecycle::new(store.clone());
        let owner = store.create_first_owner("olga", "x", 0).await.unwrap().unwrap();
        let recipient = RecipientRecord {
            id: "rc_1".into(),
            name: "Insurer".into(),
            kind: "insurer".into(),
            registered_by: owner,
            created: 0,
            secret_hash: vec![0; 32],
        };
        store.create_recipient(&recipient, 0).await.unwrap();
        let terms = Terms {
            categories: ["water".to_owned()].into(),
            metrics: Default::default(),
            granularity: Granularity::Day,
            window_from: 0,
            window_to: None,
            duration_days: 1,
            purpose: "leak cover".into(),
            offer: Offer { text: "a discount".into(), amount: None, currency: None, period: None },
        };
        let request = store.create_request("rc_1", owner, &terms, 0).await.unwrap();
        let grant = GrantRecord {
            id: "g_1".into(),
            request_id: request,
            recipient_id: "rc_1".into(),
            subject_id: owner,
            expires_ms: expiry(&terms, 1_000),
            terms,
            created_ms: 1_000,
            revoked_ms: None,
        };
        let signer = store.receipt_signer(0).await.unwrap();
        let ctx = ReceiptContext { jurisdiction: "EU", subject_name: "olga", recipient: &recipient };
        let granted = make_receipt(&signer, &ctx, &grant, ReceiptEvent::Granted, 1_000).unwrap();
        assert!(store.create_grant(&grant, &granted).await.unwrap());

        // Before expiry the sweep records nothing; after it, one "expired" receipt.
        sweep((&store, &lifecycle), &signer, "EU", grant.expires_ms - 1).await.unwrap();
        assert_eq!(store.receipts_of("g_1").await.unwrap().len(), 1);
        sweep((&store, &lifecycle), &signer, "EU", grant.expires_ms + 5).await.unwrap();
        sweep((&store, &lifecycle), &signer, "EU", grant.expires_ms + 10).await.unwrap();
        let receipts = store.receipts_of("g_1").await.unwrap();
        assert_eq!(
            receipts.iter().map(|r| r.event).collect::<Vec<_>>(),
            vec![ReceiptEvent::Granted, ReceiptEvent::Expired]
        );
        let claims = receipt::verify(&receipts[1].jws, &signer.public_key()).unwrap();
        assert_eq!(claims["hearth"]["event"], "expired");
        assert_eq!(claims["jurisdiction"], "EU");

        let log = store.access_log(Some(owner)).await.unwrap();
        assert_eq!(log.iter().map(|r| r.entry.kind.as_str()).collect::<Vec<_>>(), vec!["granted", "expired"]);
        assert_eq!(store.verify_access_log(None).await.unwrap().chain, Ok(2));
        // The same key signs after a restart: receipts stay verifiable.
        assert_eq!(store.receipt_signer(0).await.unwrap().kid(), signer.kid());
    }

    #[tokio::test]
    async fn a_tenancy_is_shredded_by_the_sweep_once_its_retention_has_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Key::generate().unwrap(), 0).await.unwrap();
        let lifecycle = Lifecycle::new(store.clone());
        let owner = store.create_first_owner("olga", "x", 0).await.unwrap().unwrap();
        let signer = store.receipt_signer(0).await.unwrap();
        let end = 10 * DAY_MS;
        let tenancy = store.create_tenancy((DAY_MS, Some(end)), 2, (&[7; 32], owner, end), 0).await.unwrap().unwrap();
        let subject = crate::consent::Subject::Tenancy(tenancy);
        assert_eq!(store.keys_of(subject).len(), 1);

        // One millisecond before the retention ends, the sweep leaves it; at the end, it goes.
        let due = end + 2 * DAY_MS;
        sweep((&store, &lifecycle), &signer, "EU", due - 1).await.unwrap();
        assert_eq!(store.tenancy(tenancy).await.unwrap().unwrap().shredded, None);
        assert_eq!(store.keys_of(subject).len(), 1);
        sweep((&store, &lifecycle), &signer, "EU", due).await.unwrap();
        assert_eq!(store.tenancy(tenancy).await.unwrap().unwrap().shredded, Some(due));
        assert!(store.keys_of(subject).is_empty(), "the tenancy's key is destroyed");
        let wrapped: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT d.wrapped FROM data_keys d JOIN tenancies t ON t.key_id = d.id WHERE t.id = ?")
                .bind(tenancy)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(wrapped, None);
        // The owner's key is untouched.
        assert_eq!(store.keys_of(crate::consent::Subject::Owner).len(), 1);
    }
}
