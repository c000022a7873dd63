// A digitalocean.Certificate of type lets_encrypt on the local cloud: DigitalOcean orders it from
// Let's Encrypt and answers the DNS-01 challenge in its own DNS; here the order goes to Pebble
// and the challenge's TXT record into Pebble's DNS (pebble-challtestsrv). The certificate and its
// key stay with the local cloud (DigitalOcean never hands out a Let's Encrypt certificate's key
// either): only the load balancer stand-in reads them.
import * as crypto from "crypto";
import * as https from "https";
import * as acme from "acme-client";
import { Pebble } from "./acme";
import { Logger } from "./util";

export interface IssuedCertificate {
  /** The chain, leaf first, then the private key (PEM): what HAProxy's `crt` takes. */
  pem: string;
  notAfter: string;
  sha1Fingerprint: string;
}

/** Orders a certificate for `domains` from Pebble with DNS-01 challenges answered in Pebble's DNS. */
export async function issueLetsEncryptCertificate(pebble: Pebble, domains: string[], log: Logger): Promise<IssuedCertificate> {
  if (!domains.length) throw new Error("local cloud: a Let's Encrypt certificate needs at least one domain");
  // (Pebble's ACME endpoint has a certificate of its own CA)
  acme.axios.defaults.httpsAgent = new https.Agent({ ca: pebble.caBundlePem });
  const client = new acme.Client({ directoryUrl: pebble.directoryUrlForHost, accountKey: await acme.crypto.createPrivateEcdsaKey() });
  const [key, csr] = await acme.crypto.createCsr({ commonName: domains[0], altNames: domains }, await acme.crypto.createPrivateEcdsaKey());
  const txt = (authz: { identifier: { value: string } }) => `_acme-challenge.${authz.identifier.value}`;
  const chain = await client.auto({
    csr,
    termsOfServiceAgreed: true,
    challengePriority: ["dns-01"],
    // (the TXT record is in Pebble's DNS, which this host's resolver does not ask)
    skipChallengeVerification: true,
    challengeCreateFn: async (authz, _challenge, keyAuthorization) => {
      log(`    certificate: DNS-01 for ${authz.identifier.value} (TXT ${txt(authz)})`);
      await pebble.setTxtRecord(txt(authz), keyAuthorization);
    },
    challengeRemoveFn: async (authz) => pebble.clearTxtRecord(txt(authz)),
  });
  const info = acme.crypto.readCertificateInfo(chain);
  const leaf = new crypto.X509Certificate(chain);
  return { pem: `${chain.trim()}\n${key.toString().trim()}\n`, notAfter: info.notAfter.toISOString(), sha1Fingerprint: leaf.fingerprint.replace(/:/g, "").toLowerCase() };
}
