package kube

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"
	"sigs.k8s.io/yaml"
)

// encPrefix starts every value kube-apiserver encrypted at rest:
// "k8s:enc:<provider>:<version>:<key name>:<ciphertext>".
const encPrefix = "k8s:enc:"

// Encryption is how a value was encrypted at rest, from its prefix.
type Encryption struct {
	Provider, Version, Key string
}

func (e Encryption) String() string {
	return fmt.Sprintf("%s:%s key %q", e.Provider, e.Version, e.Key)
}

// Encrypted reads a value's encryption prefix; ok is false for a value
// stored as it is (the identity provider). It returns the ciphertext.
func Encrypted(value []byte) (enc Encryption, data []byte, ok bool) {
	if !bytes.HasPrefix(value, []byte(encPrefix)) {
		return Encryption{}, nil, false
	}
	rest := value[len(encPrefix):]
	var parts [3]string
	for i := range parts {
		j := bytes.IndexByte(rest, ':')
		if j < 0 {
			return Encryption{Provider: string(rest)}, nil, true
		}
		parts[i], rest = string(rest[:j]), rest[j+1:]
	}
	return Encryption{Provider: parts[0], Version: parts[1], Key: parts[2]}, rest, true
}

// Errors of decryption.
var (
	// ErrEncrypted reports an encrypted value with no key to read it.
	ErrEncrypted = errors.New("encrypted at rest")
	// ErrKMS reports a value encrypted by a KMS plugin: its data key is
	// sealed by the KMS, which an offline tool cannot reach.
	ErrKMS = errors.New("encrypted by a KMS provider, which cannot be decrypted offline")
	// ErrEncryptionConfig reports an EncryptionConfiguration file that
	// cannot be used.
	ErrEncryptionConfig = errors.New("encryption config")
)

// encryptionConfig is the part of kube-apiserver's EncryptionConfiguration
// (apiserver.config.k8s.io/v1) that decryption needs.
type encryptionConfig struct {
	Kind      string `json:"kind"`
	Resources []struct {
		Resources []string `json:"resources"`
		Providers []struct {
			AESCBC    *keyList `json:"aescbc"`
			AESGCM    *keyList `json:"aesgcm"`
			Secretbox *keyList `json:"secretbox"`
		} `json:"providers"`
	} `json:"resources"`
}

type keyList struct {
	Keys []struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	} `json:"keys"`
}

// Decrypter reads values with the keys of an EncryptionConfiguration.
type Decrypter struct {
	// keys holds, per "provider:key name", every key of that name the
	// config lists (a name may repeat across resources).
	keys map[string][][]byte
}

// LoadEncryptionConfig reads kube-apiserver's --encryption-provider-config
// file: the aescbc, aesgcm and secretbox providers' named keys. KMS and
// identity providers need no key here.
func LoadEncryptionConfig(path string) (*Decrypter, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c encryptionConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrEncryptionConfig, err)
	}
	if c.Kind != "EncryptionConfiguration" {
		return nil, fmt.Errorf("%s: %w: kind is %q, not EncryptionConfiguration", path, ErrEncryptionConfig, c.Kind)
	}
	d := &Decrypter{keys: map[string][][]byte{}}
	for _, r := range c.Resources {
		for _, p := range r.Providers {
			for name, kl := range map[string]*keyList{"aescbc": p.AESCBC, "aesgcm": p.AESGCM, "secretbox": p.Secretbox} {
				if kl == nil {
					continue
				}
				for _, k := range kl.Keys {
					secret, err := base64.StdEncoding.DecodeString(k.Secret)
					if err != nil {
						return nil, fmt.Errorf("%s: %w: %s key %q: %w", path, ErrEncryptionConfig, name, k.Name, err)
					}
					if err := checkKeySize(name, secret); err != nil {
						return nil, fmt.Errorf("%s: %w: %s key %q: %w", path, ErrEncryptionConfig, name, k.Name, err)
					}
					id := name + ":" + k.Name
					d.keys[id] = append(d.keys[id], secret)
				}
			}
		}
	}
	if len(d.keys) == 0 {
		return nil, fmt.Errorf("%s: %w: no aescbc, aesgcm or secretbox key", path, ErrEncryptionConfig)
	}
	return d, nil
}

func checkKeySize(provider string, key []byte) error {
	if provider == "secretbox" {
		if len(key) != 32 {
			return fmt.Errorf("secretbox keys are 32 bytes, not %d", len(key))
		}
		return nil
	}
	_, err := aes.NewCipher(key)
	return err
}

// Decrypt returns the plaintext of a value encrypted at rest, as
// kube-apiserver's transformers read it: AES-CBC with a leading IV and
// PKCS#7 padding, AES-GCM with a leading nonce and the etcd key as
// authenticated data, secretbox with a leading nonce. The key is the one
// the value's prefix names; with several keys of that name, the one that
// opens it. d may be nil (no config given).
func (d *Decrypter) Decrypt(etcdKey, value []byte) ([]byte, error) {
	enc, data, ok := Encrypted(value)
	if !ok {
		return value, nil
	}
	if enc.Provider == "kms" {
		return nil, fmt.Errorf("%w (%s)", ErrKMS, enc)
	}
	if d == nil {
		return nil, fmt.Errorf("%w with %s: pass --encryption-config with kube-apiserver's EncryptionConfiguration", ErrEncrypted, enc)
	}
	keys := d.keys[enc.Provider+":"+enc.Key]
	if len(keys) == 0 || enc.Version != "v1" {
		return nil, fmt.Errorf("%w with %s: the encryption config has no such key", ErrEncrypted, enc)
	}
	var err error
	for _, key := range keys {
		var plain []byte
		if plain, err = open(enc.Provider, key, data, etcdKey); err == nil && isObject(plain) {
			return plain, nil
		}
	}
	if err == nil {
		err = errors.New("the plaintext is not a Kubernetes object")
	}
	return nil, fmt.Errorf("%w with %s: cannot decrypt: %w", ErrEncrypted, enc, err)
}

// isObject says whether plaintext looks like what kube-apiserver stores:
// the protobuf envelope or a JSON object (a wrong CBC key can still end
// in valid padding).
func isObject(b []byte) bool {
	return bytes.HasPrefix(b, protobufMagic) || len(b) > 0 && b[0] == '{'
}

func open(provider string, key, data, etcdKey []byte) ([]byte, error) {
	switch provider {
	case "secretbox":
		var k [32]byte
		var nonce [24]byte
		if len(data) < len(nonce) {
			return nil, errors.New("shorter than its nonce")
		}
		copy(k[:], key)
		copy(nonce[:], data)
		plain, ok := secretbox.Open(nil, data[len(nonce):], &nonce, &k)
		if !ok {
			return nil, errors.New("secretbox: authentication failed")
		}
		return plain, nil
	case "aesgcm":
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		n := aead.NonceSize()
		if len(data) < n {
			return nil, errors.New("shorter than its nonce")
		}
		return aead.Open(nil, data[:n], data[n:], etcdKey)
	case "aescbc":
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		if len(data) < 2*aes.BlockSize || len(data)%aes.BlockSize != 0 {
			return nil, errors.New("not a whole number of AES blocks")
		}
		plain := make([]byte, len(data)-aes.BlockSize)
		cipher.NewCBCDecrypter(block, data[:aes.BlockSize]).CryptBlocks(plain, data[aes.BlockSize:])
		pad := int(plain[len(plain)-1])
		if pad == 0 || pad > aes.BlockSize || pad > len(plain) || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
			return nil, errors.New("invalid PKCS#7 padding")
		}
		return plain[:len(plain)-pad], nil
	}
	return nil, fmt.Errorf("unknown provider %q", strings.TrimSpace(provider))
}
