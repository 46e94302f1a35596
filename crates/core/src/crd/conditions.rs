//! metav1.Condition bookkeeping: a condition keeps its lastTransitionTime while its status
//! does not change, so `kubectl wait` and dashboards see real transitions only.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A list of conditions as stored in a status.
pub type Conditions = Vec<Condition>;

/// Sets (or replaces) the condition of `type_`, keeping the transition time when the status
/// is unchanged.
pub fn set_condition(
    conditions: &mut Conditions,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// True when the condition `type_` exists with status "True".
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut c = Conditions::new();
        set_condition(&mut c, "Ready", false, "Pending", "a", Some(1), t0);
        set_condition(&mut c, "Ready", false, "StillPending", "b", Some(2), t1);
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert_eq!(c[0].reason, "StillPending");
        set_condition(&mut c, "Ready", true, "Ready", "c", Some(2), t1);
        assert_eq!(c[0].last_transition_time, Time(t1));
        assert!(condition_is_true(&c, "Ready"));
        assert_eq!(c.len(), 1);
    }
}
