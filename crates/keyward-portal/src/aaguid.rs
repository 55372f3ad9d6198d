//! Authenticator models by AAGUID, for the devices page. Only names; nothing is
//! decided by them (attestation is what proves a model).

/// A few widespread authenticators.
const MODELS: &[(&str, &str)] = &[
    (
        "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
        "Google Password Manager",
    ),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
    ("531126d6-e717-415c-9320-3d9aa6981239", "Dashlane"),
    ("cb69481e-8ff7-4039-93ec-0a2729a154a8", "YubiKey 5 Series"),
    ("ee882879-721c-4913-9775-3dfcce97072a", "YubiKey 5 Series"),
    (
        "fa2b99dc-9e39-4257-8f92-4a30d23c4118",
        "YubiKey 5 Series with NFC",
    ),
    (
        "2fc0579f-8113-47ea-b116-bb5a8db9202a",
        "YubiKey 5 Series with NFC",
    ),
];

/// A display name for `aaguid`.
pub fn model(aaguid: Option<&str>) -> &'static str {
    match aaguid {
        None => "Unknown authenticator",
        Some(a) => MODELS
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(a))
            .map_or("Unknown authenticator", |(_, name)| name),
    }
}

/// The AAGUID in a registration's attestation object, when the authenticator gave a
/// non-zero one. `attestation_object` is the raw CBOR.
pub fn from_attestation_object(attestation_object: &[u8]) -> Option<String> {
    let map: std::collections::BTreeMap<String, serde_cbor_2::Value> =
        serde_cbor_2::from_slice(attestation_object).ok()?;
    let serde_cbor_2::Value::Bytes(auth_data) = map.get("authData")? else {
        return None;
    };
    // rpIdHash (32) | flags (1) | signCount (4) | attested credential data: aaguid (16) …
    const AT: u8 = 0x40;
    if auth_data.len() < 53 || auth_data[32] & AT == 0 {
        return None;
    }
    let id = &auth_data[37..53];
    if id.iter().all(|b| *b == 0) {
        return None;
    }
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown_models() {
        assert_eq!(
            super::model(Some("FBFC3007-154E-4ECC-8C0B-6E020557D7BD")),
            "iCloud Keychain"
        );
        assert_eq!(
            super::model(Some("00000000-0000-0000-0000-000000000001")),
            "Unknown authenticator"
        );
        assert_eq!(super::model(None), "Unknown authenticator");
    }

    #[test]
    fn garbage_is_not_an_aaguid() {
        assert_eq!(super::from_attestation_object(b"\xff\x00garbage"), None);
        assert_eq!(super::from_attestation_object(&[]), None);
    }
}
