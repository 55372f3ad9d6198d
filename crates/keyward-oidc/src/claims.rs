//! From verified claims to an [`Identity`]: the groups claim (an array of strings or a
//! single string, bounded), the merge of ID token and userinfo, and groups -> roles.
//! Pure functions; nothing here talks to the provider.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::OidcError;

/// At most this many groups are accepted from the provider.
pub const MAX_GROUPS: usize = 256;
/// At most this many bytes per group name.
pub const MAX_GROUP_LEN: usize = 1024;

/// Who signed in, as the provider vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject identifier (`sub`), unique within `issuer`.
    pub sub: String,
    pub issuer: String,
    pub email: Option<String>,
    /// Whether the provider says it verified `email`; false when it does not say.
    pub email_verified: bool,
    pub name: Option<String>,
    /// The groups claim, sorted and without repeats.
    pub groups: Vec<String>,
    /// keyward roles from `role_map`, sorted and without repeats.
    pub roles: Vec<String>,
}

/// Claims beyond the standard ones, kept as JSON so any groups claim name works.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub(crate) struct ExtraClaims {
    #[serde(flatten)]
    pub(crate) claims: serde_json::Map<String, Value>,
}

impl openidconnect::AdditionalClaims for ExtraClaims {}

/// What one source (the ID token or the userinfo response) says about the person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) email: Option<String>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) name: Option<String>,
    /// `None` when the source has no groups claim at all.
    pub(crate) groups: Option<Vec<String>>,
}

/// Reads the groups claim `claim` from `extra`: absent or `null` is `None`; a string is
/// one group; an array must hold only strings. Too many or too long names are refused.
pub(crate) fn groups(extra: &ExtraClaims, claim: &str) -> Result<Option<Vec<String>>, OidcError> {
    let bad = |what: String| OidcError::Claims(format!("the `{claim}` claim {what}"));
    let groups = match extra.claims.get(claim) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(g)) => vec![g.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_GROUPS {
                return Err(bad(format!(
                    "lists {} groups; at most {MAX_GROUPS} are accepted (have the provider send only the groups keyward needs)",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|v| match v {
                    Value::String(g) => Ok(g.clone()),
                    _ => Err(bad("must be a string or an array of strings".into())),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(bad("must be a string or an array of strings".into())),
    };
    if groups.iter().any(|g| g.len() > MAX_GROUP_LEN) {
        return Err(bad(format!(
            "has a group name longer than {MAX_GROUP_LEN} bytes"
        )));
    }
    Ok(Some(groups))
}

/// keyward roles granted by `groups`; groups not in `role_map` grant nothing.
pub(crate) fn roles(groups: &[String], role_map: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut roles: Vec<String> = groups
        .iter()
        .filter_map(|g| role_map.get(g))
        .flatten()
        .cloned()
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// One identity from the ID token and, when fetched, the userinfo response (whose `sub`
/// has already been checked to be the ID token's). Userinfo wins where it says
/// something: its email (with its own `email_verified`), name and groups claim.
pub(crate) fn identity(
    sub: String,
    issuer: String,
    id_token: Profile,
    userinfo: Option<Profile>,
    role_map: &BTreeMap<String, Vec<String>>,
) -> Identity {
    let userinfo = userinfo.unwrap_or_default();
    let (email, email_verified) = match userinfo.email {
        Some(e) => (Some(e), userinfo.email_verified),
        None => (id_token.email, id_token.email_verified),
    };
    let mut groups = userinfo.groups.or(id_token.groups).unwrap_or_default();
    groups.sort();
    groups.dedup();
    let roles = roles(&groups, role_map);
    Identity {
        sub,
        issuer,
        email,
        email_verified: email_verified.unwrap_or(false),
        name: userinfo.name.or(id_token.name),
        groups,
        roles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn extra(v: Value) -> ExtraClaims {
        serde_json::from_value(v).expect("claims object")
    }

    fn map() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            ("eng".into(), vec!["developer".into()]),
            ("admins".into(), vec!["admin".into(), "developer".into()]),
        ])
    }

    #[test]
    fn groups_claim_shapes() {
        let c = extra(json!({"groups": ["eng", "admins"], "roles": "ops", "n": null}));
        assert_eq!(
            groups(&c, "groups").unwrap(),
            Some(vec!["eng".into(), "admins".into()])
        );
        assert_eq!(groups(&c, "roles").unwrap(), Some(vec!["ops".into()]));
        assert_eq!(groups(&c, "n").unwrap(), None);
        assert_eq!(groups(&c, "missing").unwrap(), None);
        for bad in [
            json!({"g": [1]}),
            json!({"g": {"a": 1}}),
            json!({"g": true}),
        ] {
            let e = groups(&extra(bad), "g").unwrap_err();
            assert!(e.to_string().contains("array of strings"), "{e}");
        }
    }

    #[test]
    fn groups_are_bounded() {
        let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let e = groups(&extra(json!({ "groups": many })), "groups").unwrap_err();
        assert!(e.to_string().contains("at most 256"), "{e}");
        let just_enough: Vec<String> = (0..MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert!(groups(&extra(json!({ "groups": just_enough })), "groups").is_ok());
        let long = "x".repeat(MAX_GROUP_LEN + 1);
        assert!(groups(&extra(json!({ "groups": [long] })), "groups").is_err());
    }

    #[test]
    fn roles_are_mapped_sorted_and_deduped() {
        let g = ["admins", "eng", "unknown"].map(String::from);
        assert_eq!(roles(&g, &map()), ["admin", "developer"]);
        assert!(roles(&["nobody".into()], &map()).is_empty());
        assert!(roles(&[], &map()).is_empty());
    }

    #[test]
    fn userinfo_wins_where_it_speaks() {
        let id = Profile {
            email: Some("id@example.test".into()),
            email_verified: Some(true),
            name: Some("From ID token".into()),
            groups: Some(vec!["eng".into()]),
        };
        let ui = Profile {
            email: Some("ui@example.test".into()),
            email_verified: None,
            name: None,
            groups: Some(vec!["eng".into(), "admins".into(), "eng".into()]),
        };
        let who = identity("s".into(), "https://i".into(), id.clone(), Some(ui), &map());
        assert_eq!(who.email.as_deref(), Some("ui@example.test"));
        assert!(
            !who.email_verified,
            "verification travels with the email it is about"
        );
        assert_eq!(who.name.as_deref(), Some("From ID token"));
        assert_eq!(who.groups, ["admins", "eng"]);
        assert_eq!(who.roles, ["admin", "developer"]);

        let who = identity(
            "s".into(),
            "https://i".into(),
            id,
            Some(Profile::default()),
            &map(),
        );
        assert_eq!(who.email.as_deref(), Some("id@example.test"));
        assert!(who.email_verified);
        assert_eq!(who.groups, ["eng"]);
        assert_eq!(who.roles, ["developer"]);
    }
}
