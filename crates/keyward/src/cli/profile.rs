//! Saved connection profiles: `keyward login` checks a URL, API key and instance against the
//! server and saves them (0600) as a profile, which the client commands read when no flag,
//! variable or bootstrap file gives a setting (`--profile NAME`, `KEYWARD_PROFILE`; else the
//! profile `default` if it is saved).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{Conn, out};

/// A saved profile.
#[derive(Serialize, Deserialize)]
pub struct Profile {
    /// Server URL.
    pub url: String,
    /// API key.
    pub api_key: String,
    /// Instance id.
    pub instance: String,
    /// Trusted certificates (PEM file), absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// `$KEYWARD_CONFIG_DIR`, or `$XDG_CONFIG_HOME/keyward`, or `~/.config/keyward`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KEYWARD_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("keyward"));
    }
    let home = std::env::var_os("HOME")
        .context("no HOME: set KEYWARD_CONFIG_DIR to say where profiles are kept")?;
    Ok(PathBuf::from(home).join(".config").join("keyward"))
}

fn path_of(name: &str) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        bail!("profile names are letters, digits, '-', '_' and '.', not {name:?}");
    }
    Ok(config_dir()?.join("profiles").join(format!("{name}.json")))
}

/// The profile `name` (it must exist), or `default` when saved.
pub fn load(name: Option<&str>) -> anyhow::Result<Option<Profile>> {
    let path = match (path_of(name.unwrap_or("default")), name) {
        (Ok(p), _) => p,
        // No HOME and no profile named: there is simply no default profile.
        (Err(_), None) => return Ok(None),
        (Err(e), Some(_)) => return Err(e),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_none() => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading profile {} ({}): save it with `keyward login --profile {}`",
                    name.unwrap_or("default"),
                    path.display(),
                    name.unwrap_or("default")
                )
            });
        }
    };
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{} is not a keyward profile", path.display())
    })?))
}

/// `keyward login`: checks the settings against the server, then saves them.
pub async fn login(conn: Conn) -> anyhow::Result<()> {
    let name = conn
        .sources()
        .profile
        .clone()
        .unwrap_or_else(|| "default".into());
    // The profile being saved is not read (it may not exist yet); `default`, if saved, is.
    let s = super::Sources {
        profile: &None,
        ..conn.sources()
    }
    .resolve()?;
    let client = keyward_client::Client::new(
        &s.url,
        &s.api_key,
        s.instance.as_deref().unwrap_or_default(),
        s.ca_pem()?.as_deref(),
    )?;
    // The API key must work and the instance be the caller's: read one key of it.
    client
        .access_token()
        .await
        .context("the server refused the API key")?;
    client
        .list_keys(1, 0)
        .await
        .context("the server refused the instance")?;
    let profile = Profile {
        url: s.url,
        api_key: s.api_key,
        instance: s.instance.unwrap_or_default(),
        ca_cert: s.ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p)),
    };
    let path = path_of(&name)?;
    let dir = path.parent().context("profile path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&profile)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    let view = serde_json::json!({
        "profile": name, "path": path, "url": profile.url, "instance": profile.instance,
    });
    out(conn.json, &view, || {
        println!(
            "logged in to {} (instance {}); saved profile {name} in {} (mode 0600)",
            profile.url,
            profile.instance,
            path.display()
        );
        if name != "default" {
            println!("use it with --profile {name} or KEYWARD_PROFILE={name}");
        }
    })
}
