<?php
// The seamless envelope in PHP (>= 7.1), with the bundled openssl extension.
// docs/seamless.md, "Envelope", says what the wallet requires; this file is one way to do it.
//
//   php envelope.php    check this code against the published vectors

declare(strict_types=1);

const NONCE_BYTES = 12; // AES-GCM's standard nonce
const TAG_BYTES = 16;   // the full GCM tag, appended after the ciphertext

/** The request body of an event (JSON text): AES-256-GCM under the 32-byte key, a fresh random
 *  nonce, the provider code (UTF-8) as associated data; base64 (standard, padded) of
 *  nonce || ciphertext || tag. */
function envelope_seal(string $key, string $provider, string $event, ?string $nonce = null): string
{
    if (strlen($key) !== 32) {
        throw new InvalidArgumentException('the key must be 32 bytes (AES-256)');
    }
    $nonce = $nonce ?? random_bytes(NONCE_BYTES);
    $tag = '';
    $ciphertext = openssl_encrypt($event, 'aes-256-gcm', $key, OPENSSL_RAW_DATA, $nonce, $tag, $provider, TAG_BYTES);
    if ($ciphertext === false) {
        throw new RuntimeException('sealing failed');
    }
    return json_encode(['payload' => base64_encode($nonce . $ciphertext . $tag)], JSON_UNESCAPED_SLASHES);
}

/** The response object of an answer body. A sealed answer is {"payload": ...} under the key that
 *  opened the request; an R2 answer (and the key-less R1 internal_error) is plain JSON and comes
 *  back as it is. Throws when the tag does not verify. */
function envelope_open(string $key, string $provider, string $body): array
{
    $answer = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
    if (!isset($answer['payload']) || !is_string($answer['payload'])) {
        return $answer; // plain: it carries no balance
    }
    $raw = base64_decode($answer['payload'], true);
    if ($raw === false || strlen($raw) < NONCE_BYTES + TAG_BYTES) {
        throw new RuntimeException('not a sealed payload');
    }
    $plaintext = openssl_decrypt(
        substr($raw, NONCE_BYTES, -TAG_BYTES), 'aes-256-gcm', $key, OPENSSL_RAW_DATA,
        substr($raw, 0, NONCE_BYTES), substr($raw, -TAG_BYTES), $provider
    );
    if ($plaintext === false) {
        throw new RuntimeException('the answer does not open: do not trust it');
    }
    return json_decode($plaintext, true, 512, JSON_THROW_ON_ERROR);
}

// The published test vectors (docs/seamless.md, "Test vectors"; the same as /openapi.json's
// examples): provider "acme", key bytes 0 to 31. A fixed nonce is for the vector only.
const VECTOR_PROVIDER = 'acme';
const VECTOR_KEY = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
const VECTOR_NONCE = '000000000000000000000005';
const VECTOR_EVENT = '{"event":"bet","request_id":"req-3","timestamp":1779104538,"player_id":"p-42","session_token":"q3VbX0s9y2jz0Nq5m8p7tK1c4wR6vH2dL5fA9gE3uJ0","transaction_id":"b-1","round_id":"r-1","game_id":"slot-7","amount":250,"currency":"EUR"}';
const VECTOR_PAYLOAD = 'AAAAAAAAAAAAAAAF44OnFKbQ4W9ScCuUMdV5wGlhVoMUCEAyQbtPGCTNP8ueuSNj4HkJjdyvKUSLY1HXugAxZad01fP3R1VlmOvvWT2TGRiiPSmemiLQ7R6HeSGw58EZplHV8P7ors07z/JBT9WvtIlqokafQSOOlGE8BuF/1V4ygRwVBNg/czivcj7EqrttmjIH+4WqszhfiF+onrRquNMsUWuKEKNlciELOlvWQxwbSn1URn5MlwazqfTa239F0lfv+5C0zbPiBck3CjIs/gril9zVdr4EAr8jD9Lbz4ze0tOPaGI5enh3RAOXHexUrIzya4F+y2BYwxIdZcxb3oI=';
const VECTOR_ANSWER = '{"code":"R0","reason":"ok","message":"Success","request_id":"req-3","player_id":"p-42","balance":9750,"currency":"EUR","transaction_id":"1187"}';
const VECTOR_ANSWER_PAYLOAD = 'AAAAAAAAAAAAAAAG9v3igWh/Z/sxpnV07LBTiDr3eiG5h4CPV0aSNx0XUpW4ORIX3FXtdXTPs3gKhkNYIKq9f5A929HlHI86XXt52BQwZxTarJg4k+gHn9N0m+zNglWPDCPn+IVz8PQFv6oXzmwe/MjIyKKLSf6styR6NQp6SHSFIbZcwE7dunrz8jQM2+P59SjE7SHCPk2zXGupbyZk94alD9JflVsqciyq';

function check(bool $ok, string $what): void
{
    if (!$ok) {
        fwrite(STDERR, "envelope.php: FAILED: $what\n");
        exit(1);
    }
}

if (realpath($_SERVER['SCRIPT_FILENAME'] ?? '') === __FILE__) {
    $key = hex2bin(VECTOR_KEY);
    $sealed = json_decode(envelope_seal($key, VECTOR_PROVIDER, VECTOR_EVENT, hex2bin(VECTOR_NONCE)), true);
    check($sealed['payload'] === VECTOR_PAYLOAD, 'seal with the vector nonce');
    $answer = envelope_open($key, VECTOR_PROVIDER, '{"payload":"' . VECTOR_ANSWER_PAYLOAD . '"}');
    check($answer === json_decode(VECTOR_ANSWER, true), 'open');
    $fresh = envelope_seal($key, VECTOR_PROVIDER, VECTOR_EVENT); // a random nonce each time
    check(strpos($fresh, VECTOR_PAYLOAD) === false, 'a fresh nonce');
    check(envelope_open($key, VECTOR_PROVIDER, $fresh) === json_decode(VECTOR_EVENT, true), 'round trip');
    try {
        envelope_open($key, 'other', $fresh);
        check(false, 'another provider code must not open it');
    } catch (RuntimeException $expected) {
        // the provider code is bound to the payload as associated data
    }
    echo "envelope.php: test vectors OK\n";
}
