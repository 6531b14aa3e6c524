// The seamless envelope in Go, with nothing but the standard library.
// docs/seamless.md, "Envelope", says what the wallet requires; this file is one way to do it.
//
//	go run envelope.go    check this code against the published vectors
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Seal returns the request body of an event: AES-256-GCM under the 32-byte key, a fresh random
// 12-byte nonce, the provider code (UTF-8) as associated data; base64 (standard, padded) of
// nonce || ciphertext || tag.
func Seal(key []byte, provider string, event []byte) ([]byte, error) {
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	payload, err := sealPayload(key, provider, event, nonce)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"payload": payload})
}

func sealPayload(key []byte, provider string, event, nonce []byte) (string, error) {
	aead, err := newGCM(key)
	if err != nil {
		return "", err
	}
	raw := aead.Seal(append([]byte{}, nonce...), nonce, event, []byte(provider)) // nonce || ct || tag
	return base64.StdEncoding.EncodeToString(raw), nil
}

// Open returns the response object (JSON) of an answer body. A sealed answer is {"payload": ...}
// under the key that opened the request; an R2 answer (and the key-less R1 internal_error) is
// plain JSON and comes back as it is. It fails when the tag does not verify.
func Open(key []byte, provider string, body []byte) ([]byte, error) {
	var wrapper struct {
		Payload *string `json:"payload"`
	}
	if err := json.Unmarshal(body, &wrapper); err != nil {
		return nil, err
	}
	if wrapper.Payload == nil {
		return body, nil // plain: it carries no balance
	}
	raw, err := base64.StdEncoding.DecodeString(*wrapper.Payload)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("payload too short")
	}
	return aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(provider))
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("the key must be 32 bytes (AES-256), not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block) // 12-byte nonce, 16-byte tag
}

// The published test vectors (docs/seamless.md, "Test vectors"; the same as /openapi.json's
// examples): provider "acme", key bytes 0 to 31. A fixed nonce is for the vector only.
const (
	vectorProvider      = "acme"
	vectorKey           = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vectorNonce         = "000000000000000000000005"
	vectorEvent         = `{"event":"bet","request_id":"req-3","timestamp":1779104538,"player_id":"p-42","session_token":"q3VbX0s9y2jz0Nq5m8p7tK1c4wR6vH2dL5fA9gE3uJ0","transaction_id":"b-1","round_id":"r-1","game_id":"slot-7","amount":250,"currency":"EUR"}`
	vectorPayload       = "AAAAAAAAAAAAAAAF44OnFKbQ4W9ScCuUMdV5wGlhVoMUCEAyQbtPGCTNP8ueuSNj4HkJjdyvKUSLY1HXugAxZad01fP3R1VlmOvvWT2TGRiiPSmemiLQ7R6HeSGw58EZplHV8P7ors07z/JBT9WvtIlqokafQSOOlGE8BuF/1V4ygRwVBNg/czivcj7EqrttmjIH+4WqszhfiF+onrRquNMsUWuKEKNlciELOlvWQxwbSn1URn5MlwazqfTa239F0lfv+5C0zbPiBck3CjIs/gril9zVdr4EAr8jD9Lbz4ze0tOPaGI5enh3RAOXHexUrIzya4F+y2BYwxIdZcxb3oI="
	vectorAnswer        = `{"code":"R0","reason":"ok","message":"Success","request_id":"req-3","player_id":"p-42","balance":9750,"currency":"EUR","transaction_id":"1187"}`
	vectorAnswerPayload = "AAAAAAAAAAAAAAAG9v3igWh/Z/sxpnV07LBTiDr3eiG5h4CPV0aSNx0XUpW4ORIX3FXtdXTPs3gKhkNYIKq9f5A929HlHI86XXt52BQwZxTarJg4k+gHn9N0m+zNglWPDCPn+IVz8PQFv6oXzmwe/MjIyKKLSf6styR6NQp6SHSFIbZcwE7dunrz8jQM2+P59SjE7SHCPk2zXGupbyZk94alD9JflVsqciyq"
)

func check(ok bool, what string) {
	if !ok {
		panic(what)
	}
}

func main() {
	key, _ := hex.DecodeString(vectorKey)
	nonce, _ := hex.DecodeString(vectorNonce)
	payload, err := sealPayload(key, vectorProvider, []byte(vectorEvent), nonce)
	check(err == nil && payload == vectorPayload, "seal with the vector nonce")
	answer, err := Open(key, vectorProvider, []byte(`{"payload":"`+vectorAnswerPayload+`"}`))
	check(err == nil && string(answer) == vectorAnswer, "open")
	fresh, err := Seal(key, vectorProvider, []byte(vectorEvent)) // a random nonce each time
	check(err == nil && !bytes.Contains(fresh, []byte(vectorPayload)), "a fresh nonce")
	event, err := Open(key, vectorProvider, fresh)
	check(err == nil && string(event) == vectorEvent, "round trip")
	_, err = Open(key, "other", fresh)
	check(err != nil, "another provider code must not open it")
	fmt.Println("envelope.go: test vectors OK")
}
