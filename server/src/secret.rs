//! Secrets the relay is given (the TURN REST secret, the room-token key): read from a file
//! or an environment variable, never from a flag (which `ps` shows), and never printed.

use std::fmt;
use std::path::Path;

/// A secret's bytes. Its `Debug` says only that it is there, so a logged or printed
/// configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, for the code that signs or checks with it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a secret could not be had. The message names the flag and never the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{flag}: cannot read {path}: {source}")]
    Unreadable {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// The file or variable holds nothing but whitespace.
    #[error("{flag}: the secret is empty")]
    Empty { flag: &'static str },
    /// Both the file and the variable are given: which one wins would be a guess.
    #[error("{flag} and {env} are both set; give one")]
    Both {
        flag: &'static str,
        env: &'static str,
    },
}

/// The secret in `file` (read whole; a trailing newline is not part of it), or else in the
/// environment variable `env`; `None` when neither is given. `flag` names the file's flag
/// in errors.
pub fn load(
    file: Option<&Path>,
    flag: &'static str,
    env: &'static str,
) -> Result<Option<Secret>, SecretError> {
    let from_env = std::env::var_os(env);
    let text = match (file, from_env) {
        (Some(_), Some(_)) => return Err(SecretError::Both { flag, env }),
        (Some(path), None) => std::fs::read(path).map_err(|source| SecretError::Unreadable {
            flag,
            path: path.display().to_string(),
            source,
        })?,
        (None, Some(value)) => value.into_encoded_bytes(),
        (None, None) => return Ok(None),
    };
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() {
        let flag = if file.is_some() { flag } else { env };
        return Err(SecretError::Empty { flag });
    }
    Ok(Some(Secret(trimmed.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_trimmed_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("signalroom-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("secret");
        std::fs::write(&file, "hunter2\n").expect("written");
        let secret = load(Some(&file), "--x-file", "SIGNALROOM_TEST_UNSET_X")
            .expect("read")
            .expect("present");
        assert_eq!(secret.expose(), b"hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));

        std::fs::write(&file, " \n").expect("written");
        let empty = load(Some(&file), "--x-file", "SIGNALROOM_TEST_UNSET_X").expect_err("refused");
        assert_eq!(empty.to_string(), "--x-file: the secret is empty");

        let missing = load(
            Some(&dir.join("absent")),
            "--x-file",
            "SIGNALROOM_TEST_UNSET_X",
        )
        .expect_err("refused");
        assert!(missing.to_string().starts_with("--x-file: cannot read "));
        assert!(load(None, "--x-file", "SIGNALROOM_TEST_UNSET_X")
            .expect("nothing to read")
            .is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
