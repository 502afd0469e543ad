//! Injected faults: rules switched at run time that replace (or delay) the answer to matching
//! API requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which API endpoint a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    List,
    Detail,
    Employments,
    Payruns,
    /// Every authenticated API request, including forbidden and unknown paths.
    Any,
}

/// What a matching request gets instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultAction {
    /// This status; `body` defaults to `{"message": <reason>}`; `retry_after` adds the header.
    Status {
        status: u16,
        #[serde(default)]
        body: Option<Value>,
        #[serde(default)]
        retry_after: Option<u32>,
    },
    /// The connection is closed with SO_LINGER 0 before answering: the client sees a reset.
    Reset,
    /// Wait, then answer normally.
    Delay { ms: u64 },
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// 200 announcing the full Content-Length, half the bytes written, then the connection closes.
    Truncate,
    /// 200 with this JSON verbatim.
    Body { body: Value },
    /// Any answer: this status, these headers (`Content-Type`, `Location`, `Retry-After` as
    /// an HTTP date, ...) and this body text, verbatim (an HTML error page, a redirect).
    Raw {
        status: u16,
        #[serde(default)]
        headers: Vec<(String, String)>,
        #[serde(default)]
        body: String,
    },
}

/// A fault rule. Rules are checked in order; every rule whose filter matches a request counts it,
/// and the first one inside its window (`skip` passed, `count` not used up) applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    /// Only list requests for this page (1 when the request names none).
    #[serde(default)]
    pub page: Option<u32>,
    /// Only detail/employments requests for these employee ids.
    #[serde(default)]
    pub employee_ids: Option<Vec<String>>,
    /// Only requests for this company.
    #[serde(default)]
    pub company_id: Option<String>,
    /// Inside the window, only every n-th matching request (the n-th, 2n-th, ...); the others
    /// pass. `None` or 1: every one.
    #[serde(default)]
    pub every: Option<u32>,
    /// Let this many matching requests pass first.
    #[serde(default)]
    pub skip: u32,
    /// Apply to this many matching requests; `None` = until cleared.
    #[serde(default)]
    pub count: Option<u32>,
    pub action: FaultAction,
}

/// The request as the fault rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub company_id: &'a str,
    pub endpoint: Option<Endpoint>,
    pub page: Option<u32>,
    pub employee_id: Option<&'a str>,
}

impl FaultRule {
    fn matches(&self, t: &Target) -> bool {
        let endpoint_ok = match self.endpoint {
            Endpoint::Any => true,
            ep => t.endpoint == Some(ep),
        };
        let page_ok = match self.page {
            None => true,
            Some(p) => t.endpoint == Some(Endpoint::List) && t.page == Some(p),
        };
        let ids_ok = match (&self.employee_ids, t.employee_id) {
            (None, _) => true,
            (Some(ids), Some(id)) => ids.iter().any(|x| x == id),
            (Some(_), None) => false,
        };
        let company_ok = self.company_id.as_deref().is_none_or(|c| c == t.company_id);
        endpoint_ok && page_ok && ids_ok && company_ok
    }
}

/// The installed rules with how many requests each has matched.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<(FaultRule, u32)>,
}

impl Faults {
    pub fn set(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules.into_iter().map(|r| (r, 0)).collect();
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The action for this request, counting it against every matching rule up to the one that
    /// applies.
    pub fn check(&mut self, t: &Target) -> Option<FaultAction> {
        for (rule, seen) in &mut self.rules {
            if !rule.matches(t) {
                continue;
            }
            let n = *seen;
            *seen = seen.saturating_add(1);
            let in_window = n >= rule.skip && rule.count.is_none_or(|c| n - rule.skip < c);
            let chosen = rule
                .every
                .is_none_or(|e| e <= 1 || (n - rule.skip + 1) % e == 0);
            if in_window && chosen {
                return Some(rule.action.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(page: u32) -> Target<'static> {
        Target {
            company_id: "c",
            endpoint: Some(Endpoint::List),
            page: Some(page),
            employee_id: None,
        }
    }

    #[test]
    fn skip_and_count_window() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"endpoint":"any","skip":1,"count":2,"action":{"type":"status","status":503}}"#,
        )
        .unwrap();
        let mut f = Faults::default();
        f.set(vec![rule]);
        let got: Vec<bool> = (0..5).map(|_| f.check(&list(1)).is_some()).collect();
        assert_eq!(got, [false, true, true, false, false]);
    }

    #[test]
    fn page_filter_only_matches_that_page() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"endpoint":"list","page":2,"action":{"type":"malformed_json"}}"#,
        )
        .unwrap();
        let mut f = Faults::default();
        f.set(vec![rule]);
        assert!(f.check(&list(1)).is_none());
        assert_eq!(f.check(&list(2)), Some(FaultAction::MalformedJson));
    }

    #[test]
    fn every_nth_inside_the_window() {
        let rules: Vec<FaultRule> = serde_json::from_str(
            r#"[{"endpoint":"any","every":3,"action":{"type":"status","status":503}},
                {"endpoint":"any","every":2,"action":{"type":"reset"}}]"#,
        )
        .unwrap();
        let mut f = Faults::default();
        f.set(rules);
        let got: Vec<Option<FaultAction>> = (0..6).map(|_| f.check(&list(1))).collect();
        let s503 = FaultAction::Status {
            status: 503,
            body: None,
            retry_after: None,
        };
        // 503 on the 3rd and 6th; the second rule counts what the first lets pass (1, 2, 4, 5)
        // and resets every second of those.
        assert_eq!(
            got,
            [
                None,
                Some(FaultAction::Reset),
                Some(s503.clone()),
                None,
                Some(FaultAction::Reset),
                Some(s503),
            ]
        );
    }
}
