//! The policy file: TOML in, validated and compiled [`Rule`]s out.
//!
//! The top level goes through serde (`deny_unknown_fields`), so syntax errors keep
//! toml's line and column. Each `[[rule]]` table is then read field by field, so that
//! every mistake, including an unknown key, is reported with the rule's position and
//! name, the field, and what to write instead.

use std::collections::HashMap;

use serde::Deserialize;
use toml::{Table, Value};

use crate::check;
use crate::error::PolicyError;
use crate::rule::{Access, Device, Requirements, Rule};

/// Every key a `[[rule]]` table may hold.
const FIELDS: [&str; 11] = [
    "name",
    "hosts",
    "paths",
    "methods",
    "sources",
    "access",
    "roles",
    "device",
    "aaguids",
    "max_auth_age",
    "assertion",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<i64>,
    #[serde(default)]
    rule: Vec<Table>,
}

/// Parses, validates and compiles a policy file.
pub(crate) fn parse(text: &str) -> Result<Vec<Rule>, PolicyError> {
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| PolicyError::file(format!("not a valid policy file: {e}")))?;
    if let Some(version) = raw.version
        && version != 1
    {
        return Err(PolicyError::file(format!(
            "version = {version} is not supported; write version = 1 (or leave it out)"
        )));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for (index, table) in raw.rule.into_iter().enumerate() {
        let rule = RuleReader::new(index, table).read()?;
        if let Some(first) = seen.insert(rule.name.clone(), index) {
            return Err(PolicyError::rule(
                index,
                Some(&rule.name),
                Some("name"),
                format!(
                    "rule {} already has this name; give every rule its own name",
                    first + 1
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Takes the fields out of one rule table, reporting errors against the rule.
struct RuleReader {
    index: usize,
    name: Option<String>,
    table: Table,
}

impl RuleReader {
    fn new(index: usize, table: Table) -> Self {
        // The name first, if it is a usable string, so later errors can show it.
        let name = match table.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        };
        Self { index, name, table }
    }

    fn error(&self, field: Option<&'static str>, message: impl Into<String>) -> PolicyError {
        PolicyError::rule(self.index, self.name.as_deref(), field, message)
    }

    fn read(mut self) -> Result<Rule, PolicyError> {
        if let Some(key) = self.table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let hint = match FIELDS.iter().find(|f| is_near(key, f)) {
                Some(f) => format!("did you mean `{f}`? "),
                None => String::new(),
            };
            let message = format!(
                "unknown field `{key}`; {hint}a rule may have: {}",
                FIELDS.join(", ")
            );
            return Err(self.error(None, message));
        }

        let name = self.string("name")?;
        match name {
            Some(n) if !n.trim().is_empty() => {}
            _ => {
                return Err(self.error(
                    Some("name"),
                    "every rule needs a non-empty `name = \"...\"`, unique in the file",
                ));
            }
        }
        let hosts = self.list("hosts", "[\"app.example.com\", \"*.example.com\"]")?;
        let paths = self.list("paths", "[\"/admin\", \"/static/\"]")?;
        let methods = self.list("methods", "[\"GET\", \"HEAD\"]")?;
        let sources = self.list("sources", "[\"10.0.0.0/8\", \"2001:db8::/32\"]")?;
        let access = self.string("access")?;
        let roles = self.list("roles", "[\"admin\", \"ops\"]")?;
        let device = self.string("device")?;
        let aaguids = self.list("aaguids", "[\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]")?;
        let max_auth_age = self.string("max_auth_age")?;
        let assertion = self.boolean("assertion")?.unwrap_or(true);

        let mut exact_hosts = Vec::new();
        let mut host_suffixes = Vec::new();
        for host in hosts.iter().flatten() {
            match check::host(host).map_err(|m| self.error(Some("hosts"), m))? {
                check::Host::Exact(h) => exact_hosts.push(h),
                check::Host::Suffix(s) => host_suffixes.push(s),
            }
        }
        let paths = self.each(paths, "paths", check::path)?;
        let methods = self.each(methods, "methods", check::method)?;
        let sources = self.each(sources, "sources", check::source)?;
        let aaguids = self.each(aaguids, "aaguids", check::aaguid)?;
        let roles = self.each(roles, "roles", check::role)?;

        let access_name = access.ok_or_else(|| {
            self.error(
                Some("access"),
                "every rule needs `access`: \"public\", \"authenticated\" or \"roles\"",
            )
        })?;
        let device = match device.as_deref() {
            None => None,
            Some("any") => Some(Device::Any),
            Some("passkey") => Some(Device::Passkey),
            Some("attested") => Some(Device::Attested),
            Some(other) => {
                return Err(self.error(
                    Some("device"),
                    format!("unknown device {other:?}; write \"any\", \"passkey\" or \"attested\""),
                ));
            }
        };
        let max_auth_age = match max_auth_age {
            None => None,
            Some(text) => {
                Some(check::max_auth_age(&text).map_err(|m| self.error(Some("max_auth_age"), m))?)
            }
        };

        let access = match access_name.as_str() {
            "public" => {
                let extra = [
                    ("roles", !roles.is_empty()),
                    ("device", device.is_some()),
                    ("aaguids", !aaguids.is_empty()),
                    ("max_auth_age", max_auth_age.is_some()),
                ];
                if let Some((field, _)) = extra.iter().find(|(_, given)| *given) {
                    return Err(self.error(
                        Some(field),
                        format!(
                            "a public rule lets everyone in, so `{field}` would have no effect; \
                             set access = \"authenticated\" (or \"roles\") or remove `{field}`"
                        ),
                    ));
                }
                Access::Public
            }
            "authenticated" | "roles" => {
                let wants_roles = access_name == "roles";
                if wants_roles && roles.is_empty() {
                    return Err(self.error(
                        Some("roles"),
                        "access = \"roles\" needs `roles = [\"...\"]`: a user with any one of \
                         them may pass",
                    ));
                }
                if !wants_roles && !roles.is_empty() {
                    return Err(self.error(
                        Some("roles"),
                        "`roles` only applies with access = \"roles\"; set access = \"roles\" \
                         or remove `roles`",
                    ));
                }
                if !aaguids.is_empty() && matches!(device, Some(Device::Any | Device::Passkey)) {
                    return Err(self.error(
                        Some("device"),
                        "`aaguids` demands an attested security key; set device = \"attested\" \
                         or leave `device` out",
                    ));
                }
                let device = match device {
                    _ if !aaguids.is_empty() => Device::Attested,
                    Some(d) => d,
                    None => Device::Any,
                };
                Access::Session(Requirements {
                    roles,
                    device,
                    aaguids,
                    max_auth_age,
                })
            }
            other => {
                return Err(self.error(
                    Some("access"),
                    format!(
                        "unknown access {other:?}; write \"public\", \"authenticated\" or \"roles\""
                    ),
                ));
            }
        };

        Ok(Rule {
            name: self.name.clone().unwrap_or_default(),
            exact_hosts,
            host_suffixes,
            paths,
            methods,
            sources,
            access,
            assertion,
        })
    }

    /// An optional boolean field.
    fn boolean(&mut self, field: &'static str) -> Result<Option<bool>, PolicyError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(other) => Err(self.error(
                Some(field),
                format!(
                    "expected `true` or `false`, found {}; write {field} = false (without quotes)",
                    describe(&other)
                ),
            )),
        }
    }

    /// An optional string field.
    fn string(&mut self, field: &'static str) -> Result<Option<String>, PolicyError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(
                Some(field),
                format!(
                    "expected a string, found {}; write {field} = \"...\"",
                    describe(&other)
                ),
            )),
        }
    }

    /// An optional, non-empty list of strings.
    fn list(
        &mut self,
        field: &'static str,
        example: &str,
    ) -> Result<Option<Vec<String>>, PolicyError> {
        let items = match self.table.remove(field) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(Value::String(s)) => {
                return Err(self.error(
                    Some(field),
                    format!("expected a list; write {field} = [{s:?}]"),
                ));
            }
            Some(other) => {
                return Err(self.error(
                    Some(field),
                    format!(
                        "expected a list of strings, found {}; write {field} = {example}",
                        describe(&other)
                    ),
                ));
            }
        };
        if items.is_empty() {
            return Err(self.error(
                Some(field),
                format!(
                    "an empty list matches nothing; remove `{field}` to match any, or list at \
                     least one"
                ),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => out.push(s),
                other => {
                    return Err(self.error(
                        Some(field),
                        format!(
                            "expected strings in the list, found {}; write {field} = {example}",
                            describe(&other)
                        ),
                    ));
                }
            }
        }
        Ok(Some(out))
    }

    /// Checks and converts every item of an optional list.
    fn each<T>(
        &self,
        items: Option<Vec<String>>,
        field: &'static str,
        convert: fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, PolicyError> {
        items
            .iter()
            .flatten()
            .map(|s| convert(s).map_err(|m| self.error(Some(field), m)))
            .collect()
    }
}

/// A value as the operator wrote it, for "found ..." messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(i) => format!("the number {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("`{b}`"),
        other => format!("a {}", other.type_str()),
    }
}

/// A likely typo of `field`: singular/plural, or one edit away.
fn is_near(key: &str, field: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key == field || format!("{key}s") == field || key == format!("{field}s") {
        return true;
    }
    let (a, b) = (key.as_bytes(), field.as_bytes());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => a.iter().zip(b).filter(|(x, y)| x != y).count() == 1,
        1 => (0..long.len())
            .any(|skip| long[..skip] == short[..skip] && long[skip + 1..] == short[skip..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
