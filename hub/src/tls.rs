//! TLS for the web UI, the API and MQTT, with the hub as its own certificate authority (as
//! a Hue bridge or a Matter controller is for its devices).
//!
//! At first start the hub makes a CA (ten years) and a server certificate (397 days) signed
//! by it, covering `<hostname>.local`, `localhost` and the machine's addresses, and keeps them in `<data_dir>/tls/`. It makes a new server certificate when
//! less than 30 days are left or when the names it should cover change (a new LAN address):
//! at start and twice a day, swapped in without a restart. Browsers and devices trust the
//! CA once (its SHA-256 fingerprint is printed at start, and shown in the UI, to compare).
//!
//! An owner may give their own certificate chain and key instead (`tls.cert_file` and
//! `tls.key_file`); the hub then re-reads them twice a day and makes nothing itself.
//!
//! Certificates are judged by other machines' clocks, so validity here is from the system
//! clock, not the hub's injected one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::TlsConfig;
use crate::durable::{self, beside};

const CA_DAYS: i64 = 3650;
/// Under the 398 days browsers accept from public CAs, in case a platform applies it to
/// every CA.
const SERVER_DAYS: i64 = 397;
const RENEW_BEFORE_DAYS: i64 = 30;
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
const DAY_S: i64 = 86_400;

/// The hub's certificates, and the server configurations that present them.
pub struct Tls {
    current: Arc<Current>,
    /// For HTTPS (ALPN `http/1.1`).
    pub https: Arc<ServerConfig>,
    /// For MQTT over TLS.
    pub mqtt: Arc<ServerConfig>,
    source: Source,
    ca: Ca,
}

/// The certificate devices and browsers are asked to trust.
#[derive(Clone)]
pub struct Ca {
    pub pem: String,
    pub der: Vec<u8>,
    /// SHA-256 of the certificate, as `AB:CD:...` (what browsers and `openssl x509
    /// -fingerprint -sha256` show).
    pub fingerprint: String,
}

enum Source {
    /// The hub's own CA, in this directory, issuing for these names.
    Hub { dir: PathBuf, extra_names: Vec<String> },
    /// The owner's certificate chain and key files.
    Owner { cert: PathBuf, key: PathBuf },
}

/// The server certificate currently presented; replaced when renewed.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| key.clone())
    }
}

/// What the hub's server certificate says about itself, read back from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issued {
    not_after_s: i64,
    names: Vec<String>,
}

impl Tls {
    /// Loads the certificates (making the hub's own where there are none yet, or renewing
    /// them) and builds the server configurations.
    pub fn load(config: &TlsConfig, data_dir: &Path, now_ms: i64) -> anyhow::Result<Self> {
        let source = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Source::Owner { cert: cert.clone(), key: key.clone() },
            (None, None) => Source::Hub { dir: data_dir.join("tls"), extra_names: config.names.clone() },
            _ => bail!("tls.cert_file and tls.key_file go together"),
        };
        let (chain, key, ca) = source.certificates(now_ms / 1000, MakeCa::IfNone)?;
        let current = certified(chain, key)?;
        current.keys_match().context("the TLS certificate and key do not match")?;
        let current = Arc::new(Current(RwLock::new(current)));
        let build = |alpn: &[&[u8]]| -> anyhow::Result<Arc<ServerConfig>> {
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self { https: build(&[b"http/1.1"])?, mqtt: build(&[])?, current, source, ca })
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Whether the certificates are the owner's rather than the hub's own.
    pub fn owners(&self) -> bool {
        matches!(self.source, Source::Owner { .. })
    }

    /// Renews (or re-reads) the server certificate if it is due at `now_ms`; returns
    /// whether it changed.
    pub fn refresh(&self, now_ms: i64) -> anyhow::Result<bool> {
        let (chain, key, ca) = self.source.certificates(now_ms / 1000, MakeCa::Never)?;
        if ca.der != self.ca.der {
            bail!("the CA certificate changed under the running hub; restart it to present the new one");
        }
        let fresh = certified(chain, key)?;
        fresh.keys_match().context("the TLS certificate and key do not match")?;
        let mut current = self.current.0.write().map_err(|_| anyhow::anyhow!("certificate lock poisoned"))?;
        if current.cert == fresh.cert {
            return Ok(false);
        }
        *current = fresh;
        Ok(true)
    }
}

/// Checks the certificates twice a day until `shutdown`.
pub async fn refresh_periodically(tls: Arc<Tls>, clock: Clock, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = clock.sleep_until(clock.now_ms() + CHECK_EVERY.as_millis() as i64) => {}
        }
        let (tls, now) = (tls.clone(), clock.now_ms());
        match tokio::task::spawn_blocking(move || tls.refresh(now)).await {
            Ok(Ok(true)) => tracing::info!("TLS server certificate renewed"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::error!(error = format!("{error:#}"), "could not renew the TLS certificate"),
            Err(error) => tracing::error!(%error, "TLS renewal task failed"),
        }
    }
}

impl Source {
    /// The chain to present, its key, and the CA to show.
    fn certificates(
        &self,
        now: i64,
        make_ca: MakeCa,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, Ca)> {
        match self {
            Self::Owner { cert, key } => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("reading {}", cert.display()))?;
                let Some(top) = chain.last() else { bail!("{} holds no certificate", cert.display()) };
                let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
                let ca = Ca::from_der(top.to_vec());
                Ok((chain, key, ca))
            }
            Self::Hub { dir, extra_names } => {
                let names = names(extra_names);
                hub_certificates(dir, &names, now, make_ca)
            }
        }
    }
}

impl Ca {
    fn from_der(der: Vec<u8>) -> Self {
        let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        let pem = pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), lf);
        let fingerprint = Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        Self { pem, der, fingerprint }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = provider().key_provider.load_private_key(key).context("loading the TLS private key")?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The names and addresses the server certificate covers: the host name's `.local` name
/// (mDNS; the bare host name could only be vouched for with a constraint opening a whole
/// top-level domain), `localhost`, the loopback addresses, every address of the machine's
/// interfaces, and what the owner added. Sorted, so a change is noticed whatever the order.
fn names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(host) = host_name() {
        names.push(format!("{host}.local"));
    }
    if let Ok(interfaces) = local_ip_address::list_afinet_netifas() {
        for (_, ip) in interfaces {
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            };
            if !link_local && !ip.is_unspecified() {
                names.push(ip.to_string());
            }
        }
    }
    names.extend(extra.iter().map(|n| n.trim().to_ascii_lowercase()));
    names.sort();
    names.dedup();
    names
}

/// The machine's host name, if it is a usable DNS label.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let host = raw.trim().split('.').next()?.to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 63
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !host.starts_with('-')
        && !host.ends_with('-');
    valid.then_some(host)
}

/// Whether a server certificate must be made anew.
fn due(issued: Option<&Issued>, names: &[String], now: i64) -> bool {
    match issued {
        None => true,
        Some(issued) => issued.not_after_s - now < RENEW_BEFORE_DAYS * DAY_S || issued.names != names,
    }
}

/// Whether a missing CA may be made: at start, not while running (a file that cannot be
/// read for a moment must not replace the authority everyone trusts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MakeCa {
    IfNone,
    Never,
}

fn hub_certificates(
    dir: &Path,
    names: &[String],
    now: i64,
    make_ca: MakeCa,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, Ca)> {
    let (ca_file, ca_key_file) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (server_file, server_key_file) = (dir.join("server.pem"), dir.join("server.key"));
    let missing = |r: &std::io::Result<String>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let (pem, key) = (std::fs::read_to_string(&ca_file), std::fs::read_to_string(&ca_key_file));
    let (ca_params, ca_key, ca_der) = match (pem, key) {
        (Ok(pem), Ok(key)) => {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).context("reading the hub's CA certificate")?;
            let key = KeyPair::from_pem(&key).context("reading the hub's CA key")?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).context("parsing the hub's CA certificate")?;
            let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("Hearth hub");
            (ca_params(cn, names, now), key, der.to_vec())
        }
        (pem, key) if missing(&pem) && missing(&key) && make_ca == MakeCa::IfNone => {
            let suffix = crate::devices::random_string(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 6)?;
            let params = ca_params(&format!("Hearth hub {suffix}"), names, now);
            let key = KeyPair::generate().context("making the CA key")?;
            let cert = params.self_signed(&key).context("making the CA certificate")?;
            // A new CA invalidates any server certificate signed by an old one, and what a
            // cut mid-write left: the directory is emptied of the hub's own files, then the
            // CA's key and certificate appear in it together, or not at all.
            for stale in [&server_file, &server_key_file] {
                for path in [stale.to_path_buf(), beside(stale, ".tmp")] {
                    durable::remove(&path).with_context(|| format!("removing {}", path.display()))?;
                }
            }
            for path in [&ca_file, &ca_key_file] {
                durable::remove(&beside(path, ".tmp")).with_context(|| format!("clearing {}", dir.display()))?;
            }
            let (key_pem, cert_pem) = (key.serialize_pem(), cert.pem());
            let files: [(&str, &[u8], u32); 2] =
                [("ca.key", key_pem.as_bytes(), 0o600), ("ca.pem", cert_pem.as_bytes(), 0o644)];
            durable::create_set(dir, &files, 0o700)
                .with_context(|| format!("making the hub's CA in {} (it must be empty or absent)", dir.display()))?;
            tracing::info!(path = %ca_file.display(), "made the hub's certificate authority");
            (params, key, cert.der().to_vec())
        }
        (pem, key) => {
            let why = pem.err().or(key.err()).map_or("missing".to_owned(), |e| e.to_string());
            bail!(
                "the hub's CA ({} and {}) cannot be read ({why}); it is not replaced by a new one, which every \
                 browser and device would have to trust again: restore both files, or remove both to start over",
                ca_file.display(),
                ca_key_file.display()
            );
        }
    };
    // The server certificate names only what the CA may vouch for.
    let permitted = Permitted::of(&ca_der);
    let names: Vec<String> = names.iter().filter(|n| permitted.allows(n)).cloned().collect();
    let names = names.as_slice();
    let existing = std::fs::read(&server_file).ok().zip(std::fs::read(&server_key_file).ok()).and_then(|(pem, key)| {
        let der = CertificateDer::from_pem_slice(&pem).ok()?;
        let key = PrivateKeyDer::from_pem_slice(&key).ok()?;
        // A key and certificate from two different issues (a power cut between the two
        // writes) do not match: made anew.
        certified(vec![der.clone()], key.clone_key()).ok()?.keys_match().ok()?;
        // Nor does one signed by another CA (a restored backup of the CA alone).
        issued_by(&der, &ca_der).then_some(())?;
        Some((issued(&der)?, der, key))
    });
    let (server_der, server_key) = match existing {
        Some((issued, der, key)) if !due(Some(&issued), names, now) => (der, key),
        _ => {
            let key = KeyPair::generate().context("making the server key")?;
            let mut params = CertificateParams::new(names.to_vec()).context("server certificate names")?;
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(
                DnType::CommonName,
                names.iter().find(|n| n.ends_with(".local")).map_or("localhost", String::as_str),
            );
            params.not_before = at(now - DAY_S);
            params.not_after = at(now + SERVER_DAYS * DAY_S);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            let issuer = Issuer::from_params(&ca_params, &ca_key);
            let cert = params.signed_by(&key, &issuer).context("signing the server certificate")?;
            write_private(&server_key_file, key.serialize_pem().as_bytes())?;
            write_public(&server_file, cert.pem().as_bytes())?;
            tracing::info!(names = names.join(" "), "made a TLS server certificate");
            (cert.der().clone(), PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?)
        }
    };
    let chain = vec![server_der, CertificateDer::from(ca_der.clone())];
    Ok((chain, server_key, Ca::from_der(ca_der)))
}

/// Suffixes of names that only mean something inside a home (RFC 6762 `.local`, RFC 8375
/// `home.arpa`, and the usual router domains).
const LOCAL_SUFFIXES: [&str; 5] = ["local", "localhost", "home.arpa", "internal", "lan"];

/// Private, loopback and link-local ranges (RFC 1918, RFC 4193, RFC 3927, RFC 4291).
fn private_ranges() -> [(IpAddr, u8); 8] {
    use std::net::{Ipv4Addr, Ipv6Addr};
    [
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
        (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
        (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
        (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
}

/// The CA may vouch only for names and addresses of the home: its name constraints (which
/// browsers enforce on roots a user installs) hold the local suffixes, the private ranges,
/// and the names the hub had when the CA was made. Installing it trusts the hub, not a key
/// that could speak for any website.
fn name_constraints(names: &[String]) -> rcgen::NameConstraints {
    use rcgen::{CidrSubnet, GeneralSubtree};
    let mut permitted: Vec<GeneralSubtree> =
        LOCAL_SUFFIXES.iter().map(|s| GeneralSubtree::DnsName((*s).to_owned())).collect();
    permitted.extend(
        private_ranges().map(|(ip, prefix)| GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix))),
    );
    for name in names {
        let permitted_now = Permitted::local().allows(name);
        match name.parse::<IpAddr>() {
            Ok(_) if permitted_now => {}
            Ok(ip) => permitted
                .push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, if ip.is_ipv4() { 32 } else { 128 }))),
            Err(_) if permitted_now => {}
            // A DNS constraint also permits every name under it, so a single label (a bare
            // host name such as "io") would open a whole top-level domain: only names of
            // two labels or more are added.
            Err(_) if is_narrow_dns_name(name) => permitted.push(GeneralSubtree::DnsName(name.clone())),
            Err(_) => {}
        }
    }
    rcgen::NameConstraints { permitted_subtrees: permitted, excluded_subtrees: Vec::new() }
}

/// A DNS name of at least two labels, letters, digits and hyphens only (no wildcard, no
/// empty label): safe to add as a name constraint.
pub fn is_narrow_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// What a CA's name constraints permit (everything, for a CA without them).
struct Permitted {
    dns: Option<Vec<String>>,
    /// (address, mask), both 4 or both 16 bytes.
    ips: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Permitted {
    /// The local suffixes and private ranges alone.
    fn local() -> Self {
        let ips = private_ranges()
            .into_iter()
            .map(|(ip, prefix)| {
                let addr = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                let bits = addr.len() * 8;
                let mask: Vec<u8> = (0..addr.len())
                    .map(|i| {
                        let start = i * 8;
                        let on = usize::from(prefix).saturating_sub(start).min(8).min(bits);
                        (0xff00u16 >> on) as u8
                    })
                    .collect();
                (addr, mask)
            })
            .collect();
        Self { dns: Some(LOCAL_SUFFIXES.iter().map(|s| (*s).to_owned()).collect()), ips: Some(ips) }
    }

    fn of(ca_der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let everything = Self { dns: None, ips: None };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(ca_der) else { return everything };
        let Ok(Some(constraints)) = cert.name_constraints() else { return everything };
        let Some(subtrees) = &constraints.value.permitted_subtrees else { return everything };
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for subtree in subtrees {
            match &subtree.base {
                GeneralName::DNSName(name) => dns.push((*name).to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) if bytes.len() == 8 || bytes.len() == 32 => {
                    let (addr, mask) = bytes.split_at(bytes.len() / 2);
                    ips.push((addr.to_vec(), mask.to_vec()));
                }
                _ => {}
            }
        }
        Self { dns: Some(dns), ips: Some(ips) }
    }

    fn allows(&self, name: &str) -> bool {
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                let Some(ips) = &self.ips else { return true };
                let octets = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                ips.iter().any(|(addr, mask)| {
                    addr.len() == octets.len() && octets.iter().zip(addr).zip(mask).all(|((o, a), m)| o & m == a & m)
                })
            }
            Err(_) => {
                let Some(dns) = &self.dns else { return true };
                let name = name.to_ascii_lowercase();
                dns.iter().any(|c| name == *c || name.ends_with(&format!(".{c}")))
            }
        }
    }
}

fn ca_params(common_name: &str, names: &[String], now: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.name_constraints = Some(name_constraints(names));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Hearth");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = at(now - DAY_S);
    params.not_after = at(now + CA_DAYS * DAY_S);
    params
}

/// Validity and names of a server certificate.
fn issued(der: &[u8]) -> Option<Issued> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after_s = cert.validity().not_after.timestamp();
    let san = cert.subject_alternative_name().ok()??;
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    Some(Issued { not_after_s, names })
}

/// Whether the certificate `der` names the CA `ca_der` as its issuer, by name and, where
/// both carry one, by key identifier.
fn issued_by(der: &[u8], ca_der: &[u8]) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let (Ok((_, cert)), Ok((_, ca))) =
        (x509_parser::parse_x509_certificate(der), x509_parser::parse_x509_certificate(ca_der))
    else {
        return false;
    };
    let authority = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    });
    let subject = ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
        _ => None,
    });
    let keys_agree = match (authority, subject) {
        (Some(a), Some(s)) => a == s,
        _ => true,
    };
    cert.issuer().as_raw() == ca.subject().as_raw() && keys_agree
}

fn at(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Writes a key: readable by the hub's user only, replaced whole (a power cut leaves the
/// old file or the new one).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, bytes, 0o644)
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        durable::create_dir_all(dir, 0o700).with_context(|| format!("creating {}", dir.display()))?;
    }
    durable::write(path, bytes, mode).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn a_server_certificate_is_renewed_a_month_before_expiry_or_when_names_change() {
        let names = vec!["a.local".to_owned(), "192.0.2.1".to_owned()];
        let issued = Issued { not_after_s: 100 * DAY_S, names: names.clone() };
        assert!(due(None, &names, 0));
        assert!(!due(Some(&issued), &names, 69 * DAY_S));
        assert!(due(Some(&issued), &names, 71 * DAY_S));
        assert!(due(Some(&issued), &["a.local".to_owned(), "192.0.2.2".to_owned()], 0));
    }

    #[test]
    fn the_ca_is_made_once_and_the_server_certificate_renewed_under_it() -> anyhow::Result<()> {
        let dir = dir();
        let names = vec!["127.0.0.1".to_owned(), "hub.local".to_owned()];
        let now = 1_800_000_000;
        let (chain, _, ca) = hub_certificates(dir.path(), &names, now, MakeCa::IfNone)?;
        let first = issued(&chain[0]).ok_or_else(|| anyhow::anyhow!("unreadable certificate"))?;
        assert_eq!(first.names, names);
        assert_eq!(first.not_after_s, now + SERVER_DAYS * DAY_S);
        assert_eq!(chain[1].as_ref(), ca.der.as_slice());

        // The next start keeps both.
        let (again, _, ca_again) = hub_certificates(dir.path(), &names, now + DAY_S, MakeCa::Never)?;
        assert_eq!(again[0], chain[0]);
        assert_eq!(ca_again.fingerprint, ca.fingerprint);

        // Near expiry, or with a new address, a new server certificate from the same CA.
        let late = now + (SERVER_DAYS - 10) * DAY_S;
        let (renewed, _, ca_late) = hub_certificates(dir.path(), &names, late, MakeCa::Never)?;
        assert_ne!(renewed[0], chain[0]);
        assert_eq!(ca_late.fingerprint, ca.fingerprint);
        let moved = vec!["192.168.1.9".to_owned(), "hub.local".to_owned()];
        let (readdressed, _, _) = hub_certificates(dir.path(), &moved, late, MakeCa::Never)?;
        assert_eq!(issued(&readdressed[0]).map(|i| i.names), Some(moved));

        // The renewed certificate verifies under the CA.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der.clone()))?;
        use rustls::client::danger::ServerCertVerifier;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
        let host = rustls::pki_types::ServerName::try_from("hub.local")?;
        let at = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(late as u64 + 60));
        verifier.verify_server_cert(&renewed[0], &renewed[1..], &host, &[], at)?;
        Ok(())
    }

    #[test]
    fn the_ca_vouches_only_for_the_home() -> anyhow::Result<()> {
        let dir = dir();
        let now = 1_800_000_000;
        let at_start = vec!["127.0.0.1".to_owned(), "hearth".to_owned(), "hearth.local".to_owned()];
        let (_, _, ca) = hub_certificates(dir.path(), &at_start, now, MakeCa::IfNone)?;
        let permitted = Permitted::of(&ca.der);
        for name in ["hearth.local", "x.home.arpa", "localhost", "192.168.1.20", "10.1.2.3", "fd00::1", "::1"] {
            assert!(permitted.allows(name), "{name}");
        }
        for name in ["bank.example", "hearth.example", "203.0.113.5", "8.8.8.8", "2001:db8::1", "evillocal"] {
            assert!(!permitted.allows(name), "{name}");
        }
        // A bare host name is not a constraint: it would permit a whole top-level domain.
        for name in ["x.hearth", "hearth", "bank.io"] {
            assert!(!permitted.allows(name), "{name}");
        }
        let extra = ["io".to_owned(), "*.example".to_owned(), "hub.example.org".to_owned()];
        let wide_ca = ca_params("t", &extra, now).self_signed(&KeyPair::generate()?)?;
        let wide = Permitted::of(wide_ca.der());
        assert!(!wide.allows("bank.io") && !wide.allows("x.example"));
        assert!(wide.allows("hub.example.org") && wide.allows("hearth.local"));
        // A later name the CA may not vouch for is left out of the server certificate.
        let later = vec![
            "192.168.1.20".to_owned(),
            "203.0.113.5".to_owned(),
            "bank.example".to_owned(),
            "hearth.local".to_owned(),
        ];
        let (chain, _, _) = hub_certificates(dir.path(), &later, now, MakeCa::Never)?;
        let names = issued(&chain[0]).map(|i| i.names);
        assert_eq!(names, Some(vec!["192.168.1.20".to_owned(), "hearth.local".to_owned()]));
        Ok(())
    }

    #[test]
    fn an_unreadable_ca_is_never_replaced() -> anyhow::Result<()> {
        let dir = dir();
        let names = vec!["hub.local".to_owned()];
        let (_, _, ca) = hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::IfNone)?;
        std::fs::rename(dir.path().join("ca.key"), dir.path().join("ca.key.elsewhere"))?;
        assert!(hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::IfNone).is_err(), "one file gone");
        assert!(hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::Never).is_err());
        std::fs::rename(dir.path().join("ca.key.elsewhere"), dir.path().join("ca.key"))?;
        let (_, _, again) = hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::Never)?;
        assert_eq!(again.fingerprint, ca.fingerprint);
        Ok(())
    }

    #[test]
    fn a_server_key_that_does_not_match_its_certificate_is_made_anew() -> anyhow::Result<()> {
        let dir = dir();
        let names = vec!["hub.local".to_owned()];
        let (chain, _, _) = hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::IfNone)?;
        // As if power was cut between writing the new key and the new certificate.
        std::fs::write(dir.path().join("server.key"), KeyPair::generate()?.serialize_pem())?;
        let (fresh, key, _) = hub_certificates(dir.path(), &names, 1_800_000_000, MakeCa::Never)?;
        assert_ne!(fresh[0], chain[0]);
        certified(fresh, key)?.keys_match()?;
        Ok(())
    }

    #[test]
    fn a_server_certificate_from_another_ca_is_made_anew() -> anyhow::Result<()> {
        let names = vec!["hub.local".to_owned()];
        let (mine, other) = (dir(), dir());
        hub_certificates(mine.path(), &names, 1_800_000_000, MakeCa::IfNone)?;
        hub_certificates(other.path(), &names, 1_800_000_000, MakeCa::IfNone)?;
        // A backup of the CA restored over a directory whose server pair it never signed.
        for file in ["server.pem", "server.key"] {
            std::fs::copy(other.path().join(file), mine.path().join(file))?;
        }
        let (chain, _, ca) = hub_certificates(mine.path(), &names, 1_800_000_000, MakeCa::Never)?;
        assert!(issued_by(&chain[0], &ca.der), "the server certificate chains to the hub's own CA");
        assert_ne!(std::fs::read(mine.path().join("server.pem"))?, std::fs::read(other.path().join("server.pem"))?);
        Ok(())
    }

    #[test]
    fn keys_are_readable_by_the_hub_only() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        hub_certificates(dir.path(), &["localhost".to_owned()], 1_800_000_000, MakeCa::IfNone)?;
        for key in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(key))?.permissions().mode();
            assert_eq!(mode & 0o077, 0, "{key} is {mode:o}");
        }
        Ok(())
    }
}
