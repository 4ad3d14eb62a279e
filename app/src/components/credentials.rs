//! New device credentials, shown once, with commands to paste.

use leptos::prelude::*;

use hearth_model::devices::Credentials;

#[component]
pub fn CredentialsPanel(
    /// The credentials the hub just issued.
    credentials: Credentials,
    /// Called when the user has copied them.
    on_close: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let mqtt = credentials.mqtt.clone();
    let coap = credentials.coap.clone();
    view! {
        <section class="card" id="credentials">
            <h3>"Device credentials"</h3>
            <p class="muted">"Copy these now: the secret is not shown again (you can issue new ones later)."</p>
            <p>"Device id: " <code id="cred-id">{credentials.id.clone()}</code></p>
            <p>"Secret: " <code id="cred-secret">{credentials.secret.clone()}</code></p>
            {mqtt.map(|m| view! {
                <p>"MQTT" {if m.tls { " over TLS" } else { "" }} ": host " <code>{m.host}</code> ", port " <code>{m.port}</code>
                   ", username = device id, password = secret, topic " <code>{m.topic}</code></p>
                {m.ca_url.map(|url| view! {
                    <p>"The device trusts the hub by its certificate authority: "
                       <a href=url.clone() download="hearth-ca.pem">"hearth-ca.pem"</a>
                       " (" <code>"--cafile"</code> " below)."</p>
                })}
                {m.plain_port.map(|port| view! {
                    <p class="muted">"A device that cannot do TLS: mark it so on its page, then use port "
                       <code>{port}</code> " without " <code>"--cafile"</code> " (its password then crosses the network in clear)."</p>
                })}
                <pre>{m.mosquitto_pub}</pre>
                <pre>{m.mosquitto_pub_json}</pre>
            })}
            {coap.map(|c| view! {
                <p>"CoAP over DTLS: identity = device id, pre-shared key = secret, " <code>{c.uri}</code></p>
                <pre>{c.coap_client}</pre>
            })}
            <button class="secondary" on:click=move |_| on_close()>"Done"</button>
        </section>
    }
}
