//! `kpbuild worker …`: small jobs that BuildKit exec ops run with the kpbuild binary from the
//! frontend image (which has nothing else: it is `FROM scratch`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sha2::Digest as _;

#[derive(clap::Subcommand)]
pub enum Worker {
    /// Copy a file after checking its digest (BuildKit pins HTTP sources with sha256 only).
    CheckFile {
        /// sha256 or sha512.
        #[arg(long)]
        algorithm: String,
        /// The expected digest, hex.
        #[arg(long)]
        hex: String,
        src: PathBuf,
        dest: PathBuf,
    },
}

pub fn run(w: Worker) -> anyhow::Result<()> {
    match w {
        Worker::CheckFile {
            algorithm,
            hex,
            src,
            dest,
        } => {
            let mut f =
                std::fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut sha256 = sha2::Sha256::new();
            let mut sha512 = sha2::Sha512::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                match algorithm.as_str() {
                    "sha256" => sha256.update(&buf[..n]),
                    "sha512" => sha512.update(&buf[..n]),
                    other => bail!("unsupported digest algorithm `{other}` (sha256, sha512)"),
                }
            }
            let got = match algorithm.as_str() {
                "sha256" => hex::encode(sha256.finalize()),
                _ => hex::encode(sha512.finalize()),
            };
            if !got.eq_ignore_ascii_case(&hex) {
                bail!(
                    "{}: {algorithm} is {got}, but the pin says {hex}; the download is not what was pinned",
                    src.display()
                );
            }
            let tmp = dest.with_extension("partial");
            std::fs::copy(&src, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        }
    }
}
