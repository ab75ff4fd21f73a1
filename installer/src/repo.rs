//! yum repository metadata for one directory of RPMs, written with `rpmrepo_metadata`:
//! repomd.xml with primary, filelists and other as gzip XML (the only form el6's yum reads),
//! SHA-256 checksums, and repomd.xml.asc for repo_gpgcheck.
//!
//! New metadata is written beside the old and swapped in with one atomic rename, so yum never
//! reads a half-written repository. Packages already in the old metadata are carried over
//! without being hashed again; new ones are read on several threads (one per core unless told). The XML is written
//! plain and gzipped here in one pass that also measures both forms for repomd.xml.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rpm::signature::Signing;
use rpmrepo_metadata::{
    Checksum, ChecksumType, CompressionType, Package, PackageFileOptions, PackageOptions,
    RepomdData, RepomdRecord, RepomdXml, RepositoryOptions, RepositoryReader, RepositoryWriter,
};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("indexing {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: rpmrepo_metadata::MetadataError,
    },
    #[error("signing {path}: {source}")]
    Sign {
        path: PathBuf,
        #[source]
        source: rpm::Error,
    },
}

/// What one indexing run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Indexed {
    /// Packages in the repository now.
    pub packages: usize,
    /// Of those, how many were read and hashed in this run (the rest came from the old index).
    pub hashed: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn meta(path: &Path) -> impl FnOnce(rpmrepo_metadata::MetadataError) -> RepoError + '_ {
    move |source| RepoError::Metadata {
        path: path.to_owned(),
        source,
    }
}

/// Indexes every `*.rpm` in `dir` into `dir/repodata`, with `source_date` as the time of
/// every file and the revision, signed at `signature_time`: the same packages give the same
/// bytes.
pub fn index(
    dir: &Path,
    source_date: u32,
    signature_time: u32,
    signer: &rpm::signature::pgp::Signer,
) -> Result<Indexed, RepoError> {
    index_with_jobs(
        dir,
        source_date,
        signature_time,
        signer,
        crate::parallel::default_jobs(),
    )
}

/// [`index`] on up to `jobs` threads (reading packages, compressing the metadata files); any
/// number gives the same bytes.
pub fn index_with_jobs(
    dir: &Path,
    source_date: u32,
    signature_time: u32,
    signer: &rpm::signature::pgp::Signer,
    jobs: std::num::NonZeroUsize,
) -> Result<Indexed, RepoError> {
    let mut rpms: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rpm") && entry.file_type().map_err(io(dir))?.is_file() {
            rpms.push(name);
        }
    }
    rpms.sort();

    let mut known = previously_indexed(dir);
    let mut packages: Vec<Option<Package>> = Vec::with_capacity(rpms.len());
    let mut to_read = Vec::new();
    for name in &rpms {
        let path = dir.join(name);
        let size = fs::metadata(&path).map_err(io(&path))?.len();
        let reuse = known
            .remove(name)
            .filter(|p| p.size_package() == size && p.location_href() == name);
        if reuse.is_none() {
            to_read.push(packages.len());
        }
        packages.push(reuse);
    }
    let hashed = to_read.len();
    for (i, package) in read_packages(dir, &rpms, &to_read, jobs)? {
        packages[i] = Some(package);
    }
    let packages: Vec<Package> = packages
        .into_iter()
        .flatten()
        .map(|mut p| {
            p.set_time_file(u64::from(source_date));
            p
        })
        .collect();

    // Stage beside the live metadata (same file system, so the swap is one rename).
    let staging = dir.join(".repodata.staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir(&staging).map_err(io(&staging))?;
    let result = write_staged(
        &staging,
        &packages,
        source_date,
        signature_time,
        signer,
        jobs,
    )
    .and_then(|()| swap_in(dir, &staging));
    let _ = fs::remove_dir_all(&staging);
    result?;
    Ok(Indexed {
        packages: packages.len(),
        hashed,
    })
}

/// Reads and hashes the packages `rpms[i]` for each `i` in `which`, on as many threads as there
/// are cores; returns them with their indices, in no particular order.
fn read_packages(
    dir: &Path,
    rpms: &[String],
    which: &[usize],
    jobs: std::num::NonZeroUsize,
) -> Result<Vec<(usize, Package)>, RepoError> {
    let read = |i: usize| -> Result<(usize, Package), RepoError> {
        let name = &rpms[i];
        let path = dir.join(name);
        let options = PackageFileOptions {
            package_options: PackageOptions {
                checksum_type: ChecksumType::Sha256,
                ..Default::default()
            },
            location_href: Some(name.clone()),
            location_base: None,
        };
        let package = Package::from_file_with_options(&path, options).map_err(meta(&path))?;
        Ok((i, package))
    };
    let threads = jobs.get().min(which.len().div_ceil(16)).max(1);
    if threads == 1 {
        return which.iter().map(|&i| read(i)).collect();
    }
    let chunk = which.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = which
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|&i| read(i)).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(which.len());
        for worker in workers {
            match worker.join() {
                Ok(results) => {
                    for result in results {
                        out.push(result?);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// The packages the current metadata lists, by file name; empty when there is none or it
/// cannot be read (then every package is read again).
fn previously_indexed(dir: &Path) -> BTreeMap<String, Package> {
    let mut known = BTreeMap::new();
    if !dir.join("repodata/repomd.xml").is_file() {
        return known;
    }
    let Ok(reader) = RepositoryReader::new_from_directory(dir) else {
        return known;
    };
    let Ok(iter) = reader.iter_packages() else {
        return known;
    };
    for package in iter {
        match package {
            Ok(p) => {
                known.insert(p.location_href().to_owned(), p);
            }
            Err(_) => return BTreeMap::new(),
        }
    }
    known
}

fn write_staged(
    staging: &Path,
    packages: &[Package],
    source_date: u32,
    signature_time: u32,
    signer: &rpm::signature::pgp::Signer,
    jobs: std::num::NonZeroUsize,
) -> Result<(), RepoError> {
    // The writer is given plain XML and the gzip is done here: rpmrepo_metadata would
    // decompress each file twice, a byte at a time, to fill in the open size and checksum,
    // which is most of the time an index takes. Here both come from the one pass that
    // compresses.
    let options = RepositoryOptions::default()
        .compression_type(CompressionType::None)
        .checksum_type(ChecksumType::Sha256);
    let mut writer = RepositoryWriter::new_with_options(staging, packages.len(), options)
        .map_err(meta(staging))?;
    for p in packages {
        writer.add_package(p).map_err(meta(staging))?;
    }
    writer.finish().map_err(meta(staging))?;

    // The writer records each file's mtime and the wall clock as the revision; replace both
    // with the source date so that the same packages give the same repomd.xml.
    let repomd_path = staging.join("repodata/repomd.xml");
    let file = fs::File::open(&repomd_path).map_err(io(&repomd_path))?;
    let written = RepomdXml::read_data(rpmrepo_metadata::utils::create_xml_reader(BufReader::new(
        file,
    )))
    .map_err(meta(&repomd_path))?;
    let mut repomd = RepomdData::default();
    repomd.set_revision(&source_date.to_string());
    // primary, filelists and other are compressed at once, and listed in the writer's order.
    let records = crate::parallel::map(jobs, written.records(), |record| {
        let mut record: RepomdRecord = record.clone();
        gzip_in_place(staging, &mut record)?;
        record.timestamp = i64::from(source_date);
        Ok::<_, RepoError>(record)
    })?;
    for record in records {
        repomd.add_record(record);
    }
    let mut out = Vec::new();
    {
        let mut xml = rpmrepo_metadata::utils::create_xml_writer(&mut out);
        RepomdXml::write_data(&repomd, &mut xml).map_err(meta(&repomd_path))?;
    }
    write_file(&repomd_path, &out)?;

    let signature = signer
        .sign(out.as_slice(), rpm::Timestamp(signature_time))
        .map_err(|source| RepoError::Sign {
            path: repomd_path.clone(),
            source,
        })?;
    let asc = armor_signature(&signature).map_err(|e| RepoError::Sign {
        path: repomd_path.clone(),
        source: e,
    })?;
    let asc_path = staging.join("repodata/repomd.xml.asc");
    write_file(&asc_path, asc.as_bytes())?;

    // Everything reaches the disk before the swap. The waits overlap (the file system commits
    // them together), unless the index runs on one thread.
    let mut files: Vec<PathBuf> = repomd
        .records()
        .iter()
        .map(|r| staging.join(&r.location_href))
        .collect();
    files.extend([repomd_path, asc_path]);
    let at_once = if jobs.get() == 1 {
        jobs
    } else {
        std::num::NonZeroUsize::new(files.len()).unwrap_or(jobs)
    };
    crate::parallel::map(at_once, &files, |path| {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io(path))
    })?;
    Ok(())
}

/// Writes counted bytes through to `inner` and hashes them with SHA-256.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn finish(self) -> (W, Checksum, u64) {
        let digest = hex::encode(self.hasher.finalize());
        (self.inner, Checksum::Sha256(digest), self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Replaces the plain XML file of `record` with `NAME.xml.gz` (best compression, no name or
/// time in the gzip header) and records the checksums and sizes of both, as yum wants them.
fn gzip_in_place(staging: &Path, record: &mut RepomdRecord) -> Result<(), RepoError> {
    let plain = staging.join(&record.location_href);
    let mut href = record.location_href.clone().into_os_string();
    href.push(".gz");
    let href = PathBuf::from(href);
    let gz = staging.join(&href);
    let file = fs::File::create(&gz).map_err(io(&gz))?;
    let encoder = flate2::GzBuilder::new().mtime(0).write(
        Hashing::new(BufWriter::new(file)),
        flate2::Compression::best(),
    );
    let mut open = Hashing::new(encoder);
    let mut source = fs::File::open(&plain).map_err(io(&plain))?;
    std::io::copy(&mut source, &mut open).map_err(io(&plain))?;
    let (encoder, open_checksum, open_size) = open.finish();
    let compressed = encoder.finish().map_err(io(&gz))?;
    let (writer, checksum, size) = compressed.finish();
    writer.into_inner().map_err(|e| RepoError::Io {
        path: gz.clone(),
        source: e.into_error(),
    })?;
    fs::remove_file(&plain).map_err(io(&plain))?;
    record.location_href = href;
    record.checksum = checksum;
    record.size = Some(size);
    record.open_checksum = Some(open_checksum);
    record.open_size = Some(open_size);
    Ok(())
}

/// An OpenPGP signature packet as the ASCII-armored detached signature gpg and librepo read.
pub fn armor_signature(packet: &[u8]) -> Result<String, rpm::Error> {
    use pgp::composed::{ArmorOptions, DetachedSignature};
    use pgp::packet::{Packet, PacketParser};
    let parsed = PacketParser::new(packet)
        .find_map(|p| match p {
            Ok(Packet::Signature(s)) => Some(s),
            _ => None,
        })
        .ok_or(rpm::Error::NoSignatureFound)?;
    DetachedSignature::new(parsed)
        .to_armored_string(ArmorOptions::default())
        .map_err(|e| rpm::Error::SignError(Box::new(e)))
}

/// Writes `bytes` to `path` (synced to disk later, with the other files of the index).
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    fs::write(path, bytes).map_err(io(path))
}

/// Puts `staging/repodata` in place of `dir/repodata` with one atomic exchange (or rename,
/// the first time); the old metadata ends up in `staging` and goes with it.
fn swap_in(dir: &Path, staging: &Path) -> Result<(), RepoError> {
    let new = staging.join("repodata");
    let live = dir.join("repodata");
    if live.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &new,
            rustix::fs::CWD,
            &live,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| RepoError::Io {
            path: live.clone(),
            source: e.into(),
        })?;
    } else {
        fs::rename(&new, &live).map_err(io(&live))?;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}
