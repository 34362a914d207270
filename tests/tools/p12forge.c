/* p12forge.c - makes the certificate files that openssl and keytool refuse to make, for
 * the black-box tests.
 *
 *   p12forge pkcs12 OUT KEY.pem CERT.pem MACPASS ENCPASS [FRIENDLYNAME]
 *       A PKCS#12 file with one key bag and one certificate bag sharing a localKeyID,
 *       whether or not the key belongs to the certificate (key/cert mismatch), with the
 *       MAC made with MACPASS and the bags encrypted with ENCPASS (MACPASS != ENCPASS
 *       is what `openssl pkcs12 -twopass` makes, without its terminal prompts).
 *   p12forge scrypt OUT KEY.pem CERT.pem PASS N R P real|patched
 *       A PKCS#12 file whose key bag is encrypted with PBES2/scrypt (AES-256-CBC) with
 *       cost N, block size R and parallelism P (the certificate bag plain, MAC with
 *       PASS, 2,048 iterations): `real` derives with them (keep them small); `patched`
 *       encrypts with N=1024, r=1, p=1 and then writes N, R and P into the parameters,
 *       for costs that no one can afford to derive (the file cannot be decrypted).
 *   p12forge expired OUT HOST
 *       PEM key + certificate (ECDSA P-256, CN = HOST, SAN = DNS:HOST) valid from
 *       2020-01-01 to 2021-01-01: an expired default certificate.
 *
 * Exit status 0, or 1 with a message on stderr. */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what)
{
    fprintf(stderr, "p12forge: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

static int cmd_pkcs12(int argc, char **argv)
{
    if (argc < 6) return die("usage: pkcs12 OUT KEY.pem CERT.pem MACPASS ENCPASS [NAME]");
    const char *out = argv[1], *macpass = argv[4], *encpass = argv[5];
    const char *name = argc > 6 ? argv[6] : NULL;
    FILE *f = fopen(argv[2], "r");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    f = fopen(argv[3], "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!key || !cert) return die("cannot read the key or the certificate");

    static const unsigned char keyid[] = "forged-key-id";
    STACK_OF(PKCS12_SAFEBAG) *certs = NULL, *keys = NULL;
    STACK_OF(PKCS7) *safes = NULL;
    PKCS12_SAFEBAG *cb = PKCS12_add_cert(&certs, cert);
    PKCS12_SAFEBAG *kb = PKCS12_add_key(&keys, key, 0, 2048, NID_aes_256_cbc, encpass);
    if (!cb || !kb) return die("cannot make the bags");
    PKCS12_SAFEBAG *bags[2] = {cb, kb};
    for (int i = 0; i < 2; i++) {
        if (!PKCS12_add_localkeyid(bags[i], (unsigned char *)keyid, (int)sizeof keyid - 1))
            return die("cannot add localKeyID");
        if (name && !PKCS12_add_friendlyname_utf8(bags[i], name, -1))
            return die("cannot add friendlyName");
    }
    /* as openssl does: certificates encrypted first, then the shrouded key bags */
    if (!PKCS12_add_safe(&safes, certs, NID_aes_256_cbc, 2048, encpass) ||
        !PKCS12_add_safe(&safes, keys, -1, 0, NULL))
        return die("cannot make the safes");
    PKCS12 *p12 = PKCS12_add_safes(safes, 0);
    if (!p12 || !PKCS12_set_mac(p12, macpass, -1, NULL, 0, 2048, EVP_sha256()))
        return die("cannot make the MAC");
    f = fopen(out, "wb");
    if (!f || !i2d_PKCS12_fp(f, p12)) return die("cannot write the output");
    fclose(f);
    PKCS12_free(p12);
    sk_PKCS7_pop_free(safes, PKCS7_free);
    sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
    EVP_PKEY_free(key);
    X509_free(cert);
    return 0;
}

/* Rewrites the scrypt parameters of a PBES2 AlgorithmIdentifier. */
static int patch_scrypt(X509_ALGOR *alg, uint64_t n, uint64_t r, uint64_t p)
{
    PBE2PARAM *p2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
    SCRYPT_PARAMS *sp = p2 && p2->keyfunc ? ASN1_TYPE_unpack_sequence(
                                                ASN1_ITEM_rptr(SCRYPT_PARAMS), p2->keyfunc->parameter)
                                          : NULL;
    int ok = sp && ASN1_INTEGER_set_uint64(sp->costParameter, n) &&
             ASN1_INTEGER_set_uint64(sp->blockSize, r) &&
             ASN1_INTEGER_set_uint64(sp->parallelizationParameter, p);
    ASN1_TYPE *t = NULL, *t2 = NULL;
    if (ok) ok = ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), sp, &t) != NULL;
    if (ok) {
        ASN1_TYPE_free(p2->keyfunc->parameter);
        p2->keyfunc->parameter = t;
        ok = ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(PBE2PARAM), p2, &t2) != NULL;
    }
    if (ok) {
        ASN1_TYPE_free(alg->parameter);
        alg->parameter = t2;
    }
    SCRYPT_PARAMS_free(sp);
    PBE2PARAM_free(p2);
    return ok;
}

static int cmd_scrypt(int argc, char **argv)
{
    if (argc < 9) return die("usage: scrypt OUT KEY.pem CERT.pem PASS N R P real|patched");
    const char *out = argv[1], *pass = argv[4];
    uint64_t n = strtoull(argv[5], NULL, 10), r = strtoull(argv[6], NULL, 10),
             p = strtoull(argv[7], NULL, 10);
    int patched = strcmp(argv[8], "patched") == 0;
    FILE *f = fopen(argv[2], "r");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    f = fopen(argv[3], "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!key || !cert) return die("cannot read the key or the certificate");
    X509_ALGOR *pbe = patched ? PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL, 1024, 1, 1)
                              : PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL, n, r, p);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    if (!pbe || !p8) return die("cannot make the scrypt parameters");
    X509_SIG *sig = PKCS8_set0_pbe(pass, -1, p8, pbe);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (!sig) return die("cannot encrypt the key");
    if (patched) {
        X509_ALGOR *alg = NULL;
        X509_SIG_getm(sig, &alg, NULL);
        if (!patch_scrypt(alg, n, r, p)) return die("cannot patch the scrypt parameters");
    }
    static const unsigned char keyid[] = "scrypt-key-id";
    STACK_OF(PKCS12_SAFEBAG) *certs = NULL, *keys = sk_PKCS12_SAFEBAG_new_null();
    STACK_OF(PKCS7) *safes = NULL;
    PKCS12_SAFEBAG *kb = PKCS12_SAFEBAG_create0_pkcs8(sig);
    PKCS12_SAFEBAG *cb = PKCS12_add_cert(&certs, cert);
    if (!kb || !cb || !keys || !sk_PKCS12_SAFEBAG_push(keys, kb)) return die("cannot make the bags");
    if (!PKCS12_add_localkeyid(kb, (unsigned char *)keyid, (int)sizeof keyid - 1) ||
        !PKCS12_add_localkeyid(cb, (unsigned char *)keyid, (int)sizeof keyid - 1) ||
        !PKCS12_add_friendlyname_utf8(kb, "scrypt", -1))
        return die("cannot add the attributes");
    if (!PKCS12_add_safe(&safes, certs, -1, 0, NULL) || !PKCS12_add_safe(&safes, keys, -1, 0, NULL))
        return die("cannot make the safes");
    PKCS12 *p12 = PKCS12_add_safes(safes, 0);
    if (!p12 || !PKCS12_set_mac(p12, pass, -1, NULL, 0, 2048, EVP_sha256()))
        return die("cannot make the MAC");
    f = fopen(out, "wb");
    if (!f || !i2d_PKCS12_fp(f, p12)) return die("cannot write the output");
    fclose(f);
    PKCS12_free(p12);
    sk_PKCS7_pop_free(safes, PKCS7_free);
    sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
    EVP_PKEY_free(key);
    X509_free(cert);
    return 0;
}

static int cmd_expired(int argc, char **argv)
{
    if (argc < 3) return die("usage: expired OUT HOST");
    const char *out = argv[1], *host = argv[2];
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *c = X509_new();
    X509_NAME *n = X509_NAME_new();
    if (!key || !c || !n) return die("out of memory");
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 4242);
    if (!ASN1_TIME_set_string_X509(X509_getm_notBefore(c), "20200101000000Z") ||
        !ASN1_TIME_set_string_X509(X509_getm_notAfter(c), "20210101000000Z"))
        return die("cannot set the dates");
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, n);
    X509_set_pubkey(c, key);
    char san[600];
    snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", host);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, c, c, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(c, ext, -1)) return die("cannot add the SAN");
    X509_EXTENSION_free(ext);
    if (X509_sign(c, key, EVP_sha256()) <= 0) return die("cannot sign");
    FILE *f = fopen(out, "w");
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) || !PEM_write_X509(f, c))
        return die("cannot write the output");
    fclose(f);
    X509_NAME_free(n);
    X509_free(c);
    EVP_PKEY_free(key);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "pkcs12") == 0) return cmd_pkcs12(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "expired") == 0) return cmd_expired(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "scrypt") == 0) return cmd_scrypt(argc - 1, argv + 1);
    return die("usage: p12forge pkcs12 ... | scrypt ... | expired ... (see the source)");
}
