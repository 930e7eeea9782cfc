//! Validation of the names that reach ipkeep from outside: CNI parameters and
//! the names of the objects operators create. Each check returns the reason a
//! value is refused, for the caller to prefix with the field's name.

/// CNI_CONTAINERID and network names: the spec's "alphanumeric, then any of
/// alphanumeric, underscore, dot or hyphen".
pub fn check_cni_identifier(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(format!(
                "{value:?} must start with a letter or a digit, not {c:?}"
            ))
        }
        Some(_) => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!(
            "{value:?} may hold only letters, digits, '_', '.' and '-', not {c:?}"
        ));
    }
    if value.len() > 256 {
        return Err(format!("is {} characters long, at most 256", value.len()));
    }
    Ok(())
}

/// CNI_IFNAME: a Linux interface name (at most 15 bytes, no '/', ':' or space).
pub fn check_ifname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 15 {
        return Err(format!(
            "{value:?} is {} bytes long; Linux interface names have at most 15",
            value.len()
        ));
    }
    if value == "." || value == ".." {
        return Err(format!("{value:?} is not a valid interface name"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{value:?} must not contain {c:?}"));
    }
    Ok(())
}

/// Names of objects operators create (subnets, later pools): 1 to 63
/// characters, letters, digits, '_', '.', '-', starting with a letter or digit.
pub fn check_object_name(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "{value:?} is {} characters long, at most 63",
            value.len()
        ));
    }
    check_cni_identifier(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(check_cni_identifier("abc-123_x.y").is_ok());
        assert!(check_cni_identifier("").is_err());
        assert!(check_cni_identifier("-abc").is_err());
        assert!(check_cni_identifier("a/b").is_err());
        assert!(check_cni_identifier("a b").is_err());
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("net1.100").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("..").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a:b").is_err());
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("default").is_ok());
        assert!(check_object_name(&"a".repeat(64)).is_err());
    }
}
