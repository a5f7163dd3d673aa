//! `kpbuild key generate [--out DIR|PREFIX] [--unencrypted] [--force]`: a key pair in
//! minisign's format, `PREFIX.pub` and `PREFIX.key` (`DIR/kpbuild.pub`, `DIR/kpbuild.key` for a
//! directory; `./kpbuild.*` by default). The secret key is encrypted with a password (asked
//! twice on the terminal, or read from `KPBUILD_SIGN_PASSWORD`, never from the command line)
//! unless `--unencrypted`; its file is created mode 0600. Existing key files are refused unless
//! `--force`. Both files are written under temporary names and renamed, data on disk first.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kpbuild_sign::KeyPairFiles;
use kpbuild_store::durable;

use crate::sign::{PASSWORD_ENV, password};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Generate a key pair in minisign's format: PREFIX.pub (verifies: kpbuild verify --key,
    /// minisign -V, install.sh --key) and PREFIX.key (signs: kpbuild sign, export --sign).
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A directory (DIR/kpbuild.pub, DIR/kpbuild.key) or a prefix (PREFIX.pub, PREFIX.key).
    #[arg(long, value_name = "DIR|PREFIX", default_value = "kpbuild")]
    out: PathBuf,
    /// Leave the secret key unencrypted (no password): only for a key kept in a secret store
    /// of its own.
    #[arg(long)]
    unencrypted: bool,
    /// Replace existing key files (the old secret key is lost).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Generate(a) => generate(a),
    }
}

/// `(PREFIX.pub, PREFIX.key)` for `--out`; a prefix given as `NAME.key` or `NAME.pub` is `NAME`.
fn key_paths(out: &Path) -> (PathBuf, PathBuf) {
    let prefix = if out.is_dir() {
        out.join("kpbuild")
    } else if matches!(
        out.extension().and_then(|e| e.to_str()),
        Some("key" | "pub")
    ) {
        out.with_extension("")
    } else {
        out.to_path_buf()
    };
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_os_string();
        name.push(ext);
        PathBuf::from(name)
    };
    (with(".pub"), with(".key"))
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let (public, secret) = key_paths(&args.out);
    if !args.force {
        for p in [&secret, &public] {
            if p.symlink_metadata().is_ok() {
                bail!(
                    "{} exists: kpbuild key generate does not replace a key (--force does, and \
                     the old secret key is then lost)",
                    p.display()
                );
            }
        }
    }
    let pw = if args.unencrypted {
        None
    } else {
        Some(password(
            std::env::var(PASSWORD_ENV),
            |p| rpassword::prompt_password(p),
            true,
            &format!("the new secret key {}", secret.display()),
        )?)
    };
    let kp = KeyPairFiles::generate(pw.as_deref())?;
    write_key_files(&kp, &public, &secret)?;
    eprintln!(
        "kpbuild key generate: key ID {}\n  public key  {}  (verifies: kpbuild verify --key, \
         minisign -Vm FILE -p, install.sh --key)\n  secret key  {}  ({})",
        kp.id,
        public.display(),
        secret.display(),
        if args.unencrypted {
            "NOT encrypted: keep it in a secret store"
        } else {
            "encrypted with the password; kpbuild sign and export --sign ask for it or read \
             KPBUILD_SIGN_PASSWORD"
        }
    );
    // The key alone on stdout: what `minisign -P` takes, for a script to pick up.
    println!("{}", kp.public_key.to_base64());
    Ok(())
}

/// Writes the secret key (mode 0600) and then the public key, each under a temporary name
/// renamed into place.
fn write_key_files(kp: &KeyPairFiles, public: &Path, secret: &Path) -> anyhow::Result<()> {
    for (dest, text, mode) in [(secret, &kp.secret, 0o600), (public, &kp.public, 0o644)] {
        let tmp = crate::archive::partial_path(dest);
        let write = || -> std::io::Result<()> {
            crate::interrupt::remove(&tmp)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            durable::rename(&tmp, dest)
        };
        write().with_context(|| format!("writing {}", dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_from_a_directory_or_a_prefix() {
        let d = tempfile::tempdir().unwrap();
        let (p, k) = key_paths(d.path());
        assert_eq!(p, d.path().join("kpbuild.pub"));
        assert_eq!(k, d.path().join("kpbuild.key"));
        let (p, k) = key_paths(&d.path().join("release.key"));
        assert_eq!(p, d.path().join("release.pub"));
        assert_eq!(k, d.path().join("release.key"));
        let (p, _) = key_paths(Path::new("v1.2"));
        assert_eq!(p, Path::new("v1.2.pub"));
    }

    #[test]
    fn key_files_are_refused_unless_forced_and_the_secret_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("k");
        let args = |force| GenerateArgs {
            out: out.clone(),
            unencrypted: true,
            force,
        };
        generate(args(false)).unwrap();
        let secret = std::fs::read_to_string(d.path().join("k.key")).unwrap();
        let mode = std::fs::metadata(d.path().join("k.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = generate(args(false)).unwrap_err().to_string();
        assert!(e.contains("k.key exists"), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("k.key")).unwrap(),
            secret,
            "a refused generate leaves the key as it was"
        );
        generate(args(true)).unwrap();
        assert_ne!(
            std::fs::read_to_string(d.path().join("k.key")).unwrap(),
            secret
        );
        assert!(!d.path().join("k.key.partial").exists());
        // The pair reads back: the public key is the secret key's.
        let sk = crate::sign::read_secret_key(&d.path().join("k.key")).unwrap();
        let pk = kpbuild_sign::PublicKey::parse(
            &std::fs::read_to_string(d.path().join("k.pub")).unwrap(),
        )
        .unwrap();
        assert_eq!(sk.id(), pk.id());
    }
}
