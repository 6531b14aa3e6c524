// The seamless envelope in Node.js (>= 18), with nothing but the built-in crypto module.
// docs/seamless.md, "Envelope", says what the wallet requires; this file is one way to do it.
//
//   node envelope.js                          check this code against the published vectors
//   node envelope.js seal PROVIDER KEY_B64    stdin: an event (JSON)   stdout: the request body
//   node envelope.js open PROVIDER KEY_B64    stdin: an answer body    stdout: its response object
//   node envelope.js send URL PROVIDER KEY_B64 [KEY_ID]
//                                  stdin: an event; POSTs it to URL/v1/seamless/PROVIDER, prints the answer
'use strict';
const crypto = require('crypto');

const NONCE_BYTES = 12; // AES-GCM's standard nonce
const TAG_BYTES = 16; // the full GCM tag, appended after the ciphertext

// Seal an event: AES-256-GCM under your 32-byte key, a fresh random nonce for every message, and
// your provider code (UTF-8 bytes) as the associated data. The body is {"payload": base64 of
// nonce || ciphertext || tag} (standard alphabet, padded, no line breaks).
function seal(key, provider, event, nonce = crypto.randomBytes(NONCE_BYTES)) {
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(provider, 'utf8'));
  const plaintext = Buffer.from(typeof event === 'string' ? event : JSON.stringify(event), 'utf8');
  const sealed = Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return JSON.stringify({ payload: sealed.toString('base64') });
}

// Open an answer body. A sealed answer is {"payload": ...} under the key that opened your
// request; an R2 answer (and the key-less R1 internal_error) comes as plain JSON, unsealed.
// Throws when the tag does not verify: never trust an answer that does not open.
function open(key, provider, body) {
  const answer = JSON.parse(body);
  if (typeof answer.payload !== 'string') return answer; // plain: it carries no balance
  const raw = Buffer.from(answer.payload, 'base64');
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE_BYTES));
  decipher.setAAD(Buffer.from(provider, 'utf8'));
  decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
  const plaintext = Buffer.concat([
    decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)),
    decipher.final(),
  ]);
  return JSON.parse(plaintext.toString('utf8'));
}

// The published test vectors (docs/seamless.md, "Test vectors"; the same as /openapi.json's
// examples): provider "acme", key bytes 0 to 31. A fixed nonce is for the vector only.
const VECTOR = {
  provider: 'acme',
  key: '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
  nonce: '000000000000000000000005',
  event: '{"event":"bet","request_id":"req-3","timestamp":1779104538,"player_id":"p-42","session_token":"q3VbX0s9y2jz0Nq5m8p7tK1c4wR6vH2dL5fA9gE3uJ0","transaction_id":"b-1","round_id":"r-1","game_id":"slot-7","amount":250,"currency":"EUR"}',
  payload: 'AAAAAAAAAAAAAAAF44OnFKbQ4W9ScCuUMdV5wGlhVoMUCEAyQbtPGCTNP8ueuSNj4HkJjdyvKUSLY1HXugAxZad01fP3R1VlmOvvWT2TGRiiPSmemiLQ7R6HeSGw58EZplHV8P7ors07z/JBT9WvtIlqokafQSOOlGE8BuF/1V4ygRwVBNg/czivcj7EqrttmjIH+4WqszhfiF+onrRquNMsUWuKEKNlciELOlvWQxwbSn1URn5MlwazqfTa239F0lfv+5C0zbPiBck3CjIs/gril9zVdr4EAr8jD9Lbz4ze0tOPaGI5enh3RAOXHexUrIzya4F+y2BYwxIdZcxb3oI=',
  answer: '{"code":"R0","reason":"ok","message":"Success","request_id":"req-3","player_id":"p-42","balance":9750,"currency":"EUR","transaction_id":"1187"}',
  answerPayload: 'AAAAAAAAAAAAAAAG9v3igWh/Z/sxpnV07LBTiDr3eiG5h4CPV0aSNx0XUpW4ORIX3FXtdXTPs3gKhkNYIKq9f5A929HlHI86XXt52BQwZxTarJg4k+gHn9N0m+zNglWPDCPn+IVz8PQFv6oXzmwe/MjIyKKLSf6styR6NQp6SHSFIbZcwE7dunrz8jQM2+P59SjE7SHCPk2zXGupbyZk94alD9JflVsqciyq',
};

function selfCheck() {
  const assert = require('assert');
  const key = Buffer.from(VECTOR.key, 'hex');
  const sealed = seal(key, VECTOR.provider, VECTOR.event, Buffer.from(VECTOR.nonce, 'hex'));
  assert.strictEqual(JSON.parse(sealed).payload, VECTOR.payload, 'seal with the vector nonce');
  const answerBody = JSON.stringify({ payload: VECTOR.answerPayload });
  assert.deepStrictEqual(open(key, VECTOR.provider, answerBody), JSON.parse(VECTOR.answer), 'open');
  const fresh = seal(key, VECTOR.provider, VECTOR.event); // a random nonce: a new payload each time
  assert.notStrictEqual(JSON.parse(fresh).payload, VECTOR.payload);
  assert.deepStrictEqual(open(key, VECTOR.provider, fresh), JSON.parse(VECTOR.event), 'round trip');
  assert.throws(() => open(key, 'other', fresh), 'another provider code must not open it');
  console.log('envelope.js: test vectors OK');
}

// Send one event and open its answer. The answer is always HTTP 200: the outcome is its `code`.
async function send(url, provider, key, event, keyId) {
  const headers = { 'Content-Type': 'application/json' };
  if (keyId) headers['X-Key-Id'] = keyId; // then only that key is tried, no fallback
  const response = await fetch(`${url}/v1/seamless/${encodeURIComponent(provider)}`, {
    method: 'POST',
    headers,
    body: seal(key, provider, event),
  });
  return open(key, provider, await response.text());
}

async function main(args) {
  const command = args[0];
  if (command === undefined) return selfCheck();
  const input = require('fs').readFileSync(0, 'utf8').trim();
  let answer;
  if (command === 'send') {
    const [url, provider, keyB64, keyId] = args.slice(1);
    answer = JSON.stringify(await send(url, provider, Buffer.from(keyB64, 'base64'), input, keyId));
  } else {
    const [provider, keyB64] = args.slice(1);
    const key = Buffer.from(keyB64, 'base64');
    if (command === 'seal') answer = seal(key, provider, input);
    else if (command === 'open') answer = JSON.stringify(open(key, provider, input));
    else throw new Error(`unknown command: ${command}`);
  }
  process.stdout.write(answer + '\n');
}

module.exports = { seal, open, send };
if (require.main === module) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
