// The seamless envelope in Java (>= 17), with nothing but the JDK (javax.crypto).
// docs/seamless.md, "Envelope", says what the wallet requires; this file is one way to do it.
//
//   java Envelope.java                          check this code against the published vectors
//   java Envelope.java seal PROVIDER KEY_B64    stdin: an event (JSON)   stdout: the request body
//   java Envelope.java open PROVIDER KEY_B64    stdin: a sealed answer   stdout: its plaintext
//
// No JSON library is assumed: the body is {"payload": "..."} and the payload is base64, so it
// needs no escaping; use your own JSON library to build events and read answers.

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Base64;
import java.util.HexFormat;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public final class Envelope {
    static final int NONCE_BYTES = 12; // AES-GCM's standard nonce
    static final int TAG_BITS = 128; // the full 16-byte tag, appended after the ciphertext
    static final SecureRandom RANDOM = new SecureRandom();
    static final Pattern PAYLOAD = Pattern.compile("\"payload\"\\s*:\\s*\"([A-Za-z0-9+/=]*)\"");

    /** The request body of an event: AES-256-GCM under the 32-byte key, a fresh random nonce,
     *  the provider code (UTF-8) as associated data; base64 (standard, padded, one line) of
     *  nonce || ciphertext || tag. */
    static String seal(byte[] key, String provider, String event) throws GeneralSecurityException {
        byte[] nonce = new byte[NONCE_BYTES];
        RANDOM.nextBytes(nonce);
        return "{\"payload\":\"" + sealPayload(key, provider, event, nonce) + "\"}";
    }

    static String sealPayload(byte[] key, String provider, String event, byte[] nonce)
            throws GeneralSecurityException {
        Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
        cipher.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(key, "AES"), new GCMParameterSpec(TAG_BITS, nonce));
        cipher.updateAAD(provider.getBytes(StandardCharsets.UTF_8));
        byte[] sealed = cipher.doFinal(event.getBytes(StandardCharsets.UTF_8)); // ciphertext || tag
        byte[] raw = new byte[NONCE_BYTES + sealed.length];
        System.arraycopy(nonce, 0, raw, 0, NONCE_BYTES);
        System.arraycopy(sealed, 0, raw, NONCE_BYTES, sealed.length);
        return Base64.getEncoder().encodeToString(raw); // not the MIME encoder: no line breaks
    }

    /** The response object (JSON text) of an answer body. A sealed answer is {"payload": ...}
     *  under the key that opened the request; an R2 answer (and the key-less R1 internal_error)
     *  is plain JSON and comes back as it is. Throws AEADBadTagException if it does not open. */
    static String open(byte[] key, String provider, String body) throws GeneralSecurityException {
        Matcher m = PAYLOAD.matcher(body);
        if (!m.find()) return body; // plain: it carries no balance
        return openPayload(key, provider, m.group(1));
    }

    static String openPayload(byte[] key, String provider, String payload) throws GeneralSecurityException {
        byte[] raw = Base64.getDecoder().decode(payload);
        Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
        cipher.init(Cipher.DECRYPT_MODE, new SecretKeySpec(key, "AES"),
                new GCMParameterSpec(TAG_BITS, Arrays.copyOf(raw, NONCE_BYTES)));
        cipher.updateAAD(provider.getBytes(StandardCharsets.UTF_8));
        byte[] plain = cipher.doFinal(raw, NONCE_BYTES, raw.length - NONCE_BYTES);
        return new String(plain, StandardCharsets.UTF_8);
    }

    // The published test vectors (docs/seamless.md, "Test vectors"; the same as /openapi.json's
    // examples): provider "acme", key bytes 0 to 31. A fixed nonce is for the vector only.
    static final String PROVIDER = "acme";
    static final String KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    static final String NONCE = "000000000000000000000005";
    static final String EVENT = "{\"event\":\"bet\",\"request_id\":\"req-3\",\"timestamp\":1779104538,\"player_id\":\"p-42\",\"session_token\":\"q3VbX0s9y2jz0Nq5m8p7tK1c4wR6vH2dL5fA9gE3uJ0\",\"transaction_id\":\"b-1\",\"round_id\":\"r-1\",\"game_id\":\"slot-7\",\"amount\":250,\"currency\":\"EUR\"}";
    static final String PAYLOAD_VECTOR = "AAAAAAAAAAAAAAAF44OnFKbQ4W9ScCuUMdV5wGlhVoMUCEAyQbtPGCTNP8ueuSNj4HkJjdyvKUSLY1HXugAxZad01fP3R1VlmOvvWT2TGRiiPSmemiLQ7R6HeSGw58EZplHV8P7ors07z/JBT9WvtIlqokafQSOOlGE8BuF/1V4ygRwVBNg/czivcj7EqrttmjIH+4WqszhfiF+onrRquNMsUWuKEKNlciELOlvWQxwbSn1URn5MlwazqfTa239F0lfv+5C0zbPiBck3CjIs/gril9zVdr4EAr8jD9Lbz4ze0tOPaGI5enh3RAOXHexUrIzya4F+y2BYwxIdZcxb3oI=";
    static final String ANSWER = "{\"code\":\"R0\",\"reason\":\"ok\",\"message\":\"Success\",\"request_id\":\"req-3\",\"player_id\":\"p-42\",\"balance\":9750,\"currency\":\"EUR\",\"transaction_id\":\"1187\"}";
    static final String ANSWER_PAYLOAD = "AAAAAAAAAAAAAAAG9v3igWh/Z/sxpnV07LBTiDr3eiG5h4CPV0aSNx0XUpW4ORIX3FXtdXTPs3gKhkNYIKq9f5A929HlHI86XXt52BQwZxTarJg4k+gHn9N0m+zNglWPDCPn+IVz8PQFv6oXzmwe/MjIyKKLSf6styR6NQp6SHSFIbZcwE7dunrz8jQM2+P59SjE7SHCPk2zXGupbyZk94alD9JflVsqciyq";

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void selfCheck() throws GeneralSecurityException {
        byte[] key = HexFormat.of().parseHex(KEY);
        byte[] nonce = HexFormat.of().parseHex(NONCE);
        check(sealPayload(key, PROVIDER, EVENT, nonce).equals(PAYLOAD_VECTOR), "seal with the vector nonce");
        check(open(key, PROVIDER, "{\"payload\":\"" + ANSWER_PAYLOAD + "\"}").equals(ANSWER), "open");
        String fresh = seal(key, PROVIDER, EVENT); // a random nonce: a new payload each time
        check(!fresh.contains(PAYLOAD_VECTOR), "a fresh nonce");
        check(open(key, PROVIDER, fresh).equals(EVENT), "round trip");
        try {
            open(key, "other", fresh);
            throw new AssertionError("another provider code must not open it");
        } catch (AEADBadTagException expected) {
            // the provider code is bound to the payload as associated data
        }
        System.out.println("Envelope.java: test vectors OK");
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            selfCheck();
            return;
        }
        byte[] key = Base64.getDecoder().decode(args[2]);
        String input = new String(System.in.readAllBytes(), StandardCharsets.UTF_8).trim();
        switch (args[0]) {
            case "seal" -> System.out.println(seal(key, args[1], input));
            case "open" -> System.out.println(open(key, args[1], input));
            default -> throw new IllegalArgumentException("unknown command: " + args[0]);
        }
    }
}
