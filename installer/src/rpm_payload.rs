//! An RPM's payload compressed once for every package that carries the same files.
//!
//! The RPMs of one release differ by dist in their headers (release, changelog, requires) far
//! more often than in their files: el7, al7 and al8 ship the same cpio archive, and xz is
//! almost all the time a build takes. So a package is built in two steps: [`unsealed`] makes
//! its final header over a plain cpio archive, and [`Unsealed::seal`] gives it the xz form of
//! that archive, which [`seal_all`] makes once per distinct archive.
//!
//! The header is the one the `rpm` crate makes for an `Xz(2)` payload but for the payload's
//! digest (a unit test holds it to that). The payload is one xz block where the crate writes one
//! per file: the same archive, a little smaller, and what `xz -2` makes of it.

use std::collections::BTreeMap;
use std::io::Write;
use std::num::NonZeroUsize;

use rpm::{IndexData, IndexTag};
use sha2::{Digest, Sha256};

/// xz at a fast preset: the payload is mostly one compact static binary, and level 9 makes it
/// barely smaller at many times the cost.
pub const XZ_LEVEL: u32 = 2;
/// The rpmlib() feature an xz payload needs, which rpm 4.8 has; a package adds it with its
/// other requires (the rpm crate adds CompressedFileNames, FileDigests, PayloadFilesHavePrefix).
pub const PAYLOAD_IS_XZ: (&str, &str) = ("PayloadIsXz", "5.2-1");
/// The region tag every header starts with; `Header::from_entries` makes it again.
const HEADER_IMMUTABLE: u32 = 63;

/// The build settings every tasknode RPM uses: v4 (rpm 4.8 reads it), the files' times and
/// the build time at `source_date`, no reserved signature space (rpm 4.8 and 4.11 know no such
/// tag), and an uncompressed archive that [`seal_all`] compresses.
pub fn config(source_date: u32) -> rpm::BuildConfig {
    rpm::BuildConfig::v4()
        .compression(rpm::CompressionWithLevel::None)
        .source_date(source_date)
        .reserved_space(None)
}

/// Builds `builder` (configured with [`config`], requiring [`PAYLOAD_IS_XZ`]) into a package
/// that only lacks its payload's compression and its signature.
pub fn unsealed(builder: &mut rpm::PackageBuilder) -> Result<Unsealed, rpm::Error> {
    let package = builder.build()?;
    let header = &package.metadata.header;
    let digest = match header.entry(IndexTag::RPMTAG_PAYLOADSHA256ALT)? {
        IndexData::StringArray(mut v) if v.len() == 1 => v.remove(0),
        _ => {
            return Err(rpm::Error::TagNotFound(
                IndexTag::RPMTAG_PAYLOADSHA256ALT as u32,
            ));
        }
    };
    Ok(Unsealed { package, digest })
}

/// A package whose header is final but for the payload's compression, over a plain cpio
/// archive.
#[derive(Debug)]
pub struct Unsealed {
    package: rpm::Package,
    /// SHA-256 of the cpio archive, in hex: packages with the same one share their payload.
    digest: String,
}

impl Unsealed {
    /// SHA-256 of the uncompressed archive, in hex.
    pub fn archive_digest(&self) -> &str {
        &self.digest
    }

    /// The uncompressed cpio archive.
    pub fn archive(&self) -> &[u8] {
        &self.package.payload
    }

    /// The package with `xz` (this archive compressed by [`compress`]) as its payload, signed
    /// by `signer` at `signature_time`, as the bytes of an .rpm file.
    pub fn seal(
        &self,
        xz: &[u8],
        signer: &crate::signer::PackageSigner,
        signature_time: u32,
    ) -> Result<Vec<u8>, rpm::Error> {
        let metadata = &self.package.metadata;
        let xz_sha256 = hex::encode(Sha256::digest(xz));
        let mut entries = Vec::new();
        for (tag, data) in metadata.header.get_all_entries()? {
            let data = match tag {
                HEADER_IMMUTABLE => continue,
                t if t == IndexTag::RPMTAG_PAYLOADSHA256 as u32 => {
                    IndexData::StringArray(vec![xz_sha256.clone()])
                }
                t if t == IndexTag::RPMTAG_PAYLOADFLAGS as u32 => {
                    IndexData::StringTag(XZ_LEVEL.to_string())
                }
                t if t == IndexTag::RPMTAG_PAYLOADCOMPRESSOR as u32 => {
                    return Err(rpm::Error::UnsupportedCompressorType(format!("{data}")));
                }
                _ => data,
            };
            entries.push(rpm::HeaderEntry::new(tag, data));
        }
        entries.push(rpm::HeaderEntry::new(
            IndexTag::RPMTAG_PAYLOADCOMPRESSOR as u32,
            IndexData::StringTag("xz".to_owned()),
        ));
        let mut package = rpm::Package {
            metadata: rpm::PackageMetadata {
                lead: metadata.lead.clone(),
                signature: metadata.signature.clone(),
                header: rpm::Header::from_entries(entries, IndexTag::RPMTAG_HEADERIMMUTABLE),
            },
            payload: xz.to_vec(),
        };
        // The signature header as the builder makes it: the header and payload's length, and
        // the header's digests.
        let header = package.header_bytes()?;
        package.metadata.signature = rpm::SignatureHeaderBuilder::new()
            .format(rpm::RpmFormat::V4)
            .reserved_space(None)
            .set_content_length(header.len() as u64 + xz.len() as u64)
            .calculate_digests(&header)
            .build()?;
        package.sign_with_timestamp(signer, rpm::Timestamp(signature_time))?;
        let mut bytes = Vec::with_capacity(header.len() + xz.len() + 4096);
        package.write(&mut bytes)?;
        Ok(bytes)
    }
}

/// `archive` as xz at [`XZ_LEVEL`], as an RPM payload.
pub fn compress(archive: &[u8]) -> Result<Vec<u8>, rpm::Error> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), XZ_LEVEL);
    encoder.write_all(archive)?;
    Ok(encoder.finish()?)
}

/// Seals every package, compressing each distinct archive once, on up to `jobs` threads; the
/// bytes come back in the order of `packages`. `sealed` hears each package's place in
/// `packages` as soon as that package is done.
pub fn seal_all(
    jobs: NonZeroUsize,
    packages: &[Unsealed],
    signer: &crate::signer::PackageSigner,
    signature_time: u32,
    sealed: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Vec<u8>>, rpm::Error> {
    // Each package's archive, by its place among the distinct ones.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut archives: Vec<&[u8]> = Vec::new();
    let mut which = Vec::with_capacity(packages.len());
    for (place, p) in packages.iter().enumerate() {
        let i = *seen.entry(p.archive_digest()).or_insert_with(|| {
            archives.push(p.archive());
            archives.len() - 1
        });
        which.push((place, p, i));
    }
    let compressed = crate::parallel::map(jobs, &archives, |archive| compress(archive))?;
    crate::parallel::map(jobs, &which, |(place, p, i)| {
        let bytes = p.seal(&compressed[*i], signer, signature_time)?;
        sealed(*place);
        Ok(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(release: &str, compression: rpm::CompressionWithLevel) -> rpm::PackageBuilder {
        let mut b = rpm::PackageBuilder::new("demo", "1.0", "MIT", "x86_64", "demo");
        b.using_config(config(1_700_000_000).compression(compression))
            .release(release);
        b.with_file_contents(
            (0..200_000u32)
                .flat_map(u32::to_le_bytes)
                .collect::<Vec<u8>>(),
            rpm::FileOptions::new("/usr/bin/demo").permissions(0o755),
        )
        .expect("file");
        b.with_file_contents(
            b"[demo]\n".to_vec(),
            rpm::FileOptions::new("/etc/demo.conf").config(),
        )
        .expect("file");
        b.requires(rpm::Dependency::rpmlib(PAYLOAD_IS_XZ.0, PAYLOAD_IS_XZ.1));
        b
    }

    fn keys() -> (tempfile::TempDir, crate::keys::ReleaseKeys) {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::keys::generate(dir.path(), "demo <demo@example.invalid>").expect("keygen");
        let keys = crate::keys::ReleaseKeys::load(dir.path()).expect("keys");
        (dir, keys)
    }

    #[test]
    fn packages_sharing_an_archive_share_one_payload_and_each_verifies() {
        let (_dir, keys) = keys();
        let signer = keys.package_signer();
        let verifier =
            rpm::signature::pgp::Verifier::from_asc(&keys.package_public).expect("public key");
        let unsealed: Vec<Unsealed> = ["1.el7", "1.al8", "2.el7"]
            .iter()
            .map(|r| unsealed(&mut builder(r, rpm::CompressionWithLevel::None)).expect("build"))
            .collect();
        assert_eq!(unsealed[0].archive_digest(), unsealed[1].archive_digest());
        let heard = std::sync::Mutex::new(Vec::new());
        let sealed = seal_all(NonZeroUsize::MIN, &unsealed, signer, 1_700_000_000, &|i| {
            heard.lock().expect("lock").push(i)
        })
        .expect("seal");
        assert_eq!(heard.into_inner().expect("lock"), [0, 1, 2]);
        assert_eq!(sealed.len(), 3);
        let parsed: Vec<rpm::Package> = sealed
            .iter()
            .map(|bytes| rpm::Package::parse(&mut bytes.as_slice()).expect("parse"))
            .collect();
        for (p, release) in parsed.iter().zip(["1.el7", "1.al8", "2.el7"]) {
            p.verify_digests().expect("header and payload digests");
            assert_eq!(p.metadata.get_release().expect("release"), release);
            assert_eq!(
                p.payload_compression().expect("compressor"),
                rpm::CompressionType::Xz
            );
            assert_eq!(p.signatures().expect("signatures").len(), 1);
            p.verify_signature(&verifier)
                .expect("signed by the package key");
        }
        assert_eq!(parsed[0].payload, parsed[1].payload);
        let mut archive = Vec::new();
        std::io::Read::read_to_end(
            &mut liblzma::read::XzDecoder::new(parsed[0].payload.as_slice()),
            &mut archive,
        )
        .expect("xz");
        assert_eq!(archive, unsealed[0].archive());
    }

    #[test]
    fn the_header_is_the_one_the_rpm_crate_makes_for_xz_but_for_the_payload_digest() {
        let (_dir, keys) = keys();
        let signer = keys.package_signer();
        let ours = unsealed(&mut builder("1.el7", rpm::CompressionWithLevel::None)).expect("build");
        let xz = compress(ours.archive()).expect("xz");
        let ours = rpm::Package::parse(&mut ours.seal(&xz, signer, 0).expect("seal").as_slice())
            .expect("parse");
        let crate_built = builder("1.el7", rpm::CompressionWithLevel::Xz(XZ_LEVEL))
            .build()
            .expect("build");
        let entries = |p: &rpm::Package| -> Vec<(u32, String)> {
            p.metadata
                .header
                .get_all_entries()
                .expect("entries")
                .into_iter()
                .filter(|(tag, _)| *tag != IndexTag::RPMTAG_PAYLOADSHA256 as u32)
                .map(|(tag, data)| (tag, format!("{data:?}")))
                .collect()
        };
        assert_eq!(entries(&ours), entries(&crate_built));
    }
}
