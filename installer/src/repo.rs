//! yum repository metadata for one directory of RPMs, written with `rpmrepo_metadata`:
//! repomd.xml with primary, filelists and other as gzip XML (the only form el6's yum reads),
//! SHA-256 checksums, and repomd.xml.asc for repo_gpgcheck.
//!
//! New metadata is written beside the old and swapped in with one atomic rename, so yum never
//! reads a half-written repository. Packages already in the old metadata are carried over
//! without being hashed again; new ones are read once each, on several threads (one per core
//! unless told). primary, filelists and other are each written as XML straight into their gzip
//! stream, the three at once, which measures and hashes both forms for repomd.xml as it goes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rpm::signature::Signing;
use rpmrepo_metadata::{
    Checksum, ChecksumType, FilelistsXml, MetadataError, OtherXml, Package, PackageFileOptions,
    PackageOptions, PackageSource, PrimaryXml, RepomdData, RepomdRecord, RepomdXml,
    RepositoryReader,
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
    signer: &crate::signer::PackageSigner,
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
    signer: &crate::signer::PackageSigner,
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
        let reuse = match known.remove(name) {
            Some(p) => {
                let path = dir.join(name);
                let size = fs::metadata(&path).map_err(io(&path))?.len();
                Some(p).filter(|p| p.size_package() == size && p.location_href() == name)
            }
            None => None,
        };
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

/// Packages up to this size are read into memory whole to be indexed.
const READ_WHOLE_MAX: u64 = 64 << 20;

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
        let package_options = PackageOptions {
            checksum_type: ChecksumType::Sha256,
            ..Default::default()
        };
        // A package of ordinary size is read once, then hashed and parsed in memory; a large
        // one is streamed (read twice, never held whole).
        let mut file = fs::File::open(&path).map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        let package = if size <= READ_WHOLE_MAX {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            // Through `take`: File's own read_to_end would stat and seek again for its size.
            (&mut file)
                .take(size.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(io(&path))?;
            let source = PackageSource {
                checksum: None,
                size_package: None,
                time_file: 0,
                location_href: name.clone(),
                location_base: None,
            };
            Package::from_buffer(&bytes, source, package_options)
        } else {
            let options = PackageFileOptions {
                package_options,
                location_href: Some(name.clone()),
                location_base: None,
            };
            Package::from_file_with_options(&path, options)
        };
        Ok((i, package.map_err(meta(&path))?))
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
    signer: &crate::signer::PackageSigner,
    jobs: std::num::NonZeroUsize,
) -> Result<(), RepoError> {
    // Each of primary, filelists and other is written as XML straight into its gzip stream,
    // the three at once; the stream measures and hashes both forms for repomd.xml as it goes.
    // (rpmrepo_metadata's own repository writer writes them one after another, then reads each
    // back twice, a byte at a time, for the open size and checksum.)
    let repodata = staging.join("repodata");
    fs::create_dir(&repodata).map_err(io(&repodata))?;
    for p in packages {
        p.validate_xml_fields().map_err(meta(staging))?;
    }
    let records = crate::parallel::map(jobs, &Metadata::ALL, |kind| {
        write_gzipped(staging, *kind, packages, source_date)
    })?;
    let gzipped: Vec<PathBuf> = records
        .iter()
        .map(|r| staging.join(&r.location_href))
        .collect();
    let repomd_path = repodata.join("repomd.xml");
    let asc_path = repodata.join("repomd.xml.asc");
    let mut repomd = RepomdData::default();
    repomd.set_revision(&source_date.to_string());
    for record in records {
        repomd.add_record(record);
    }
    let sign = || {
        let mut out = Vec::new();
        {
            let mut xml = rpmrepo_metadata::utils::create_xml_writer(&mut out);
            RepomdXml::write_data(&repomd, &mut xml).map_err(meta(&repomd_path))?;
        }
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
        fs::write(&repomd_path, &out).map_err(io(&repomd_path))?;
        fs::write(&asc_path, asc.as_bytes()).map_err(io(&asc_path))
    };
    // Everything reaches the disk before the swap. The gzip files' waits overlap the signing,
    // and then each other's (the file system commits them together), unless on one thread.
    let (synced, signed) = crate::parallel::join(jobs, || sync_all(&gzipped, jobs), sign);
    synced?;
    signed?;
    sync_all(&[repomd_path, asc_path], jobs)
}

/// fsyncs every file of `files`, at once unless `jobs` is one.
fn sync_all(files: &[PathBuf], jobs: std::num::NonZeroUsize) -> Result<(), RepoError> {
    let at_once = if jobs.get() == 1 {
        jobs
    } else {
        std::num::NonZeroUsize::new(files.len()).unwrap_or(jobs)
    };
    crate::parallel::map(at_once, files, |path| {
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

/// Passes writes on but not flushes: the XML writer flushes when it finishes, which would end a
/// gzip block early (an empty one, 6 bytes); the encoder's `finish` writes everything.
struct Unflushed<W>(W);

impl<W: Write> Write for Unflushed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The three metadata files yum reads, in the order repomd.xml lists them.
#[derive(Debug, Clone, Copy)]
enum Metadata {
    Primary,
    Filelists,
    Other,
}

impl Metadata {
    const ALL: [Metadata; 3] = [Metadata::Primary, Metadata::Filelists, Metadata::Other];

    fn name(self) -> &'static str {
        match self {
            Metadata::Primary => "primary",
            Metadata::Filelists => "filelists",
            Metadata::Other => "other",
        }
    }

    /// Writes this file's XML for `packages` to `out`.
    fn write<W: Write + Send>(self, out: W, packages: &[Package]) -> Result<(), MetadataError> {
        let xml = rpmrepo_metadata::utils::create_xml_writer(out);
        macro_rules! write_all {
            ($writer:expr) => {{
                let mut w = $writer;
                w.write_header(packages.len())?;
                for p in packages {
                    w.write_package(p)?;
                }
                w.finish()
            }};
        }
        match self {
            Metadata::Primary => write_all!(PrimaryXml::new_writer(xml)),
            Metadata::Filelists => write_all!(FilelistsXml::new_writer(xml)),
            Metadata::Other => write_all!(OtherXml::new_writer(xml)),
        }
    }
}

/// Writes `repodata/NAME.xml.gz` of `kind` (zlib's default level 6, the one createrepo_c uses;
/// no name or time in the gzip header) and returns its record, with the checksums and sizes of
/// both forms as yum wants them.
fn write_gzipped(
    staging: &Path,
    kind: Metadata,
    packages: &[Package],
    source_date: u32,
) -> Result<RepomdRecord, RepoError> {
    let href = PathBuf::from("repodata").join(format!("{}.xml.gz", kind.name()));
    let gz = staging.join(&href);
    let file = fs::File::create(&gz).map_err(io(&gz))?;
    let encoder = flate2::GzBuilder::new().mtime(0).write(
        Hashing::new(BufWriter::new(file)),
        flate2::Compression::default(),
    );
    let mut open = Hashing::new(Unflushed(encoder));
    // The XML comes in pieces of a few bytes: hash and compress it in large ones.
    let mut xml = BufWriter::with_capacity(1 << 16, &mut open);
    kind.write(&mut xml, packages).map_err(meta(&gz))?;
    xml.into_inner().map_err(|e| RepoError::Io {
        path: gz.clone(),
        source: e.into_error(),
    })?;
    let (Unflushed(encoder), open_checksum, open_size) = open.finish();
    let compressed = encoder.finish().map_err(io(&gz))?;
    let (writer, checksum, size) = compressed.finish();
    writer.into_inner().map_err(|e| RepoError::Io {
        path: gz.clone(),
        source: e.into_error(),
    })?;
    let mut record = RepomdRecord::default();
    record.metadata_name = kind.name().to_owned();
    record.location_href = href;
    record.timestamp = i64::from(source_date);
    record.size = Some(size);
    record.checksum = checksum;
    record.open_size = Some(open_size);
    record.open_checksum = Some(open_checksum);
    Ok(record)
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
