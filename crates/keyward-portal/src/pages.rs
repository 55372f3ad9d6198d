//! The portal's HTML: small, accessible pages rendered on the server. The only script
//! is `/.keyward/static/keyward.js` (the WebAuthn calls); no CDN, no inline code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use keyward_store::{Device, User};

use crate::aaguid;

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · keyward</title>
<link rel="stylesheet" href="/.keyward/static/keyward.css">
<script src="/.keyward/static/keyward.js" defer></script>
</head>
<body>
<main>
<p class="brand">keyward</p>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// The notice a finished step leaves on the next page (empty without one).
fn notice_html(notice: Option<&str>) -> String {
    notice
        .map(|n| {
            format!(
                r#"<p class="notice" id="notice" role="status">{}</p>"#,
                esc(n)
            )
        })
        .unwrap_or_default()
}

fn status_region() -> &'static str {
    r#"<p id="status" class="status" role="status" aria-live="polite"></p>"#
}

/// The sign-in page: the passkey ceremony (`passkey`) and/or a link to the IdP.
pub fn sign_in(
    rd: &str,
    notice: Option<&str>,
    passkey: bool,
    idp: Option<(&str, &str)>,
) -> Html<String> {
    let notice = notice_html(notice);
    let idp = idp
        .map(|(href, label)| {
            format!(
                r#"<p><a class="button secondary" id="signin-idp" href="{}">{}</a></p>"#,
                esc(href),
                esc(label)
            )
        })
        .unwrap_or_default();
    let ceremony = if passkey {
        format!(
            r#"<p>Use the passkey or security key you enrolled.</p>
<p><button type="button" id="signin">Sign in with a passkey</button></p>
<details>
<summary>My security key asks for a user name</summary>
<form id="signin-named">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username webauthn" required maxlength="128">
<button type="submit">Continue</button>
</form>
</details>
{}"#,
            status_region()
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<h1>Sign in</h1>
{notice}
<section data-flow="signin" data-rd="{rd}">
{ceremony}
{idp}
</section>"#,
        rd = esc(rd),
    );
    Html(layout("Sign in", &body))
}

/// The enrollment page (from an invite, or signed in to add a device).
pub fn enroll(user: &User, invite: Option<&str>, attested: Option<bool>, rd: &str) -> Html<String> {
    let invite_attr = invite
        .map(|i| format!(r#" data-invite="{}""#, esc(i)))
        .unwrap_or_default();
    let passkey_button = if attested == Some(true) {
        String::new()
    } else {
        r#"<button type="button" id="enroll-passkey">Create a passkey</button>"#.into()
    };
    let key_button = if attested.is_some() {
        r#"<button type="button" id="enroll-key" class="secondary">Use a security key</button>"#
    } else {
        ""
    };
    let body = format!(
        r#"<h1>Enroll a device</h1>
<section data-flow="enroll" data-rd="{rd}"{invite_attr}>
<p>Signing up as <strong id="enroll-user">{name}</strong>. Your device keeps the key; keyward only
ever sees its public half.</p>
<label for="device-name">Name this device</label>
<input id="device-name" name="device-name" value="My passkey" maxlength="64" required>
<p class="actions">{passkey_button} {key_button}</p>
{status}
</section>"#,
        rd = esc(rd),
        name = esc(&user.name),
        status = status_region(),
    );
    Html(layout("Enroll a device", &body))
}

fn when(unix: Option<i64>) -> String {
    let Some(t) = unix else {
        return "never".into();
    };
    // UTC, to the minute; no locale guessing on the server.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// "My devices".
pub fn devices(
    user: &User,
    devices: &[Device],
    current: Option<&str>,
    notice: Option<&str>,
) -> Html<String> {
    let mut rows = String::new();
    for d in devices {
        let this = if current == Some(d.device.as_str()) {
            r#" <span class="badge">this session</span>"#
        } else {
            ""
        };
        let kind = if d.attested {
            "security key (attested)"
        } else {
            "passkey"
        };
        rows.push_str(&format!(
            r#"<tr data-device="{id}">
<td><form method="post" action="/.keyward/devices/rename" class="inline">
<input type="hidden" name="device" value="{id}">
<label class="visually-hidden" for="name-{id}">Name</label>
<input id="name-{id}" name="name" value="{name}" maxlength="64" required>
<button type="submit" class="secondary">Rename</button>
</form>{this}</td>
<td>{model}<br><small>{kind}</small></td>
<td>{created}</td>
<td>{used}</td>
<td><form method="post" action="/.keyward/devices/revoke" class="inline">
<input type="hidden" name="device" value="{id}">
<button type="submit" class="danger" aria-label="Revoke {name}">Revoke</button>
</form></td>
</tr>
"#,
            id = esc(&d.device),
            name = esc(&d.name),
            model = esc(aaguid::model(d.aaguid.as_deref())),
            created = when(Some(d.created_at)),
            used = when(d.last_used_at),
        ));
    }
    let notice = notice_html(notice);
    let body = format!(
        r#"<h1>My devices</h1>
{notice}
<p>Signed in as <strong id="whoami">{name}</strong>{email}.</p>
<table id="devices">
<thead><tr><th scope="col">Name</th><th scope="col">Authenticator</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody>
</table>
<p><a class="button secondary" href="/.keyward/enroll" id="add-device">Add a device</a></p>
<form method="post" action="/.keyward/logout" class="inline"><button type="submit" id="signout">Sign out</button></form>
<form method="post" action="/.keyward/logout-all" class="inline"><button type="submit" id="signout-all" class="secondary">Sign out everywhere</button></form>"#,
        name = esc(&user.name),
        email = user
            .email
            .as_deref()
            .map(|e| format!(" ({})", esc(e)))
            .unwrap_or_default(),
    );
    Html(layout("My devices", &body))
}

/// A page that says what went wrong and what to do.
pub fn problem(status: StatusCode, title: &str, advice: &str) -> Response {
    let body = format!(
        r#"<h1 id="problem">{}</h1>
<p>{}</p>
<p><a href="/.keyward/login">Go to sign-in</a></p>"#,
        esc(title),
        esc(advice)
    );
    (status, Html(layout(title, &body))).into_response()
}

/// A JSON error for the ceremony endpoints; `message` is shown to the person.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_attribute_breakouts() {
        assert_eq!(
            esc(r#"<a href="x">'&"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(when(Some(0)), "1970-01-01 00:00 UTC");
        assert_eq!(when(Some(1_795_608_000)), "2026-11-25 12:00 UTC");
        assert_eq!(when(Some(951_782_400)), "2000-02-29 00:00 UTC");
    }
}
