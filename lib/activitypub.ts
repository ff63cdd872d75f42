import { type CavagePluginOptions } from './plugin.js'
import { type PolicyOptions, type RequiredHeader } from './options.js'

// Mastodon's rules for inbox deliveries and signed fetches (app/controllers/concerns/
// signature_verification.rb, `verify_signature_strength!` and `matches_time_window?`),
// which Pleroma, Misskey, PeerTube and GoToSocial senders all satisfy:
//  - the signature covers `(request-target)` or `digest`, and `date` or `(created)`;
//  - a GET also covers `host`; a POST also covers `digest`, and the digest must match the body;
//  - `Date`/`created` may be up to 1 hour off (CLOCK_SKEW_MARGIN), and no signature lives
//    longer than 12 hours (EXPIRATION_WINDOW_LIMIT);
//  - `rsa-sha256` or `hs2019`; hs2019 with an RSA key is RSASSA-PKCS1-v1_5 SHA-256 in the
//    fediverse, RSASSA-PSS SHA-512 in the draft: both are accepted.
// The plugin itself tolerates `Signature: Signature keyId=...` (Mastodon does the same).

const TARGET: RequiredHeader = Object.freeze(['(request-target)', 'digest'])
const TIME: RequiredHeader = Object.freeze(['date', '(created)'])
const frozen = <T extends readonly unknown[]>(list: T): T => Object.freeze(list)

/** The verification policy of the preset, usable as a route's `config.cavage: { mode, ...activityPubPolicy }`. */
export const activityPubPolicy: Readonly<Required<PolicyOptions>> = Object.freeze({
  requiredHeaders: Object.freeze({
    // HEAD is answered by GET routes in Fastify: it gets GET's rule.
    GET: frozen([TARGET, TIME, 'host']),
    HEAD: frozen([TARGET, TIME, 'host']),
    // Mastodon requires a signed digest on every POST, with or without a body.
    POST: frozen([TARGET, TIME, 'digest']),
    '*': frozen([TARGET, TIME])
  }),
  // Any method that carries a body (PUT, PATCH...) must sign its RFC 3230 Digest, as Mastodon's POSTs do.
  bodyRequiredHeaders: frozen(['digest']),
  algorithms: frozen(['rsa-sha256', 'hs2019'] as const),
  clockSkew: 3600,
  maxValidity: 43_200,
  hs2019Rsa: 'both'
})

/**
 * Plugin options for an ActivityPub server verifying inbox deliveries and signed
 * fetches the way Mastodon does. `overrides` win, key by key (pass a `secretLoader`,
 * e.g. `createRemoteKeyLoader()`).
 *
 * ```js
 * await app.register(cavagePlugin, activityPub({ secretLoader: createRemoteKeyLoader() }))
 * ```
 */
export function activityPub (overrides: Partial<CavagePluginOptions> = {}): CavagePluginOptions {
  return { ...activityPubPolicy, ...overrides }
}
