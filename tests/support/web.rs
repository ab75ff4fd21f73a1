//! The web console without a browser: signing in over plain HTTP, or HTTPS trusting one CA
//! (the sign-in page's CSRF cookie and token included) from a chosen loopback address, and
//! reading pages as the signed-in user, for tests that check what the console tells whom.

use std::net::IpAddr;

use reqwest::blocking::{Client, Response};

/// A client of one console's web pages, sending from `local`.
pub struct WebClient {
    http: Client,
    base: String,
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
pub fn cookie(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl WebClient {
    pub fn new(base: &str, local: IpAddr) -> WebClient {
        WebClient {
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(local)
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// A client of the console at `base` (https://) trusting only the CA certificate `ca_pem`.
    pub fn with_root(base: &str, local: IpAddr, ca_pem: &[u8]) -> WebClient {
        WebClient {
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(local)
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Posts the user sign-in form once (after fetching the page for its CSRF cookie) and
    /// returns the answer: 303 with a session cookie when it worked.
    pub fn sign_in_attempt(&self, user: &str, password: &str) -> reqwest::Result<Response> {
        let page = self.http.get(format!("{}/ui/login", self.base)).send()?;
        let token = cookie(&page, "tasknode_login").unwrap_or_default();
        self.http
            .post(format!("{}/ui/login", self.base))
            .header("Cookie", format!("tasknode_login={token}"))
            .form(&[
                ("csrf", token.as_str()),
                ("user_name", user),
                ("password", password),
                ("next", "/ui/groups"),
            ])
            .send()
    }

    /// Signs in as `user`, which must work.
    pub fn sign_in(self, user: &str, password: &str) -> WebSession {
        let res = self.sign_in_attempt(user, password).unwrap();
        assert_eq!(res.status(), 303, "signing in as {user}: {}", res.status());
        let session = cookie(&res, "tasknode_session").expect("a session cookie");
        WebSession {
            client: self,
            cookie: format!("tasknode_session={session}"),
        }
    }
}

/// A signed-in web session.
pub struct WebSession {
    client: WebClient,
    cookie: String,
}

impl WebSession {
    /// The `Cookie` header this session sends.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// Fetches `path` (and query) as this session; returns the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .client
            .http
            .get(format!("{}{path}", self.client.base))
            .header("Cookie", &self.cookie)
            .header("X-Tasknode-Script", "1")
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.text().unwrap())
    }
}
