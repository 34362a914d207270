/* p12_cost.c - what opening a PKCS#12 file would cost, known before any key derivation.
 *
 * Opening a file runs one password-based key derivation for the MAC and one for every
 * encrypted container or shrouded key bag. Each names its own cost in the file
 * (iteration counts, scrypt's N, r and p), so a hostile file can ask for minutes of CPU
 * or gigabytes of memory. The walk below reads those parameters from the DER structure
 * alone (no password, no derivation) and adds them up; p12_parse refuses a file over the
 * budget before it derives anything. Bags inside an encrypted container are only visible
 * once it is decrypted: p12.c adds them with p12_cost_add before deriving their keys. */
#include "p12.h"
#include "err.h"

#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* nesting of SafeContents bags that the walk follows (real files have none) */
#define MAX_NEST 8

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return a && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

/* "5,000,000" */
static void thousands(uint64_t v, char *buf, size_t len)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

/* "32 MiB", "1 GiB", else bytes with separators */
static void bytes_text(uint64_t v, char *buf, size_t len)
{
    if (v >= (1ull << 30) && v % (1ull << 30) == 0)
        snprintf(buf, len, "%llu GiB", (unsigned long long)(v >> 30));
    else if (v >= (1ull << 20) && v % (1ull << 20) == 0)
        snprintf(buf, len, "%llu MiB", (unsigned long long)(v >> 20));
    else {
        thousands(v, buf, len > 6 ? len - 6 : len);
        strcat(buf, " bytes");
    }
}

static enum p12_status bad_params(const char *label, const char *what, char *err, size_t errlen)
{
    err_set(err, errlen, "%s: not a PKCS#12 file (unreadable %s parameters)", label, what);
    return P12_ERR_FORMAT;
}

/* A non-negative INTEGER; an absent one counts as `dflt`. -1 when negative or too big. */
static int get_u64(const ASN1_INTEGER *a, uint64_t dflt, uint64_t *v)
{
    if (!a) {
        *v = dflt;
        return 0;
    }
    return ASN1_INTEGER_get_uint64(v, a) == 1 ? 0 : -1;
}

/* Checks the running totals against the budget. */
static enum p12_status check(const struct p12_cost *c, const char *label, char *err, size_t errlen)
{
    char a[48], b[48];
    if (c->iterations > P12_MAX_ITERATIONS) {
        thousands(c->iterations, a, sizeof a);
        thousands(P12_MAX_ITERATIONS, b, sizeof b);
        err_set(err, errlen,
                "%s: key derivation would take %s PBKDF2 iterations (the MAC and every "
                "encrypted part together); the limit is %s (files from openssl and keytool "
                "use 2,048 to 10,000 per part); export it again with fewer iterations",
                label, a, b);
        return P12_ERR_COST;
    }
    if (c->scrypt_mem > P12_MAX_SCRYPT_MEM) {
        bytes_text(c->scrypt_mem, a, sizeof a);
        bytes_text(P12_MAX_SCRYPT_MEM, b, sizeof b);
        err_set(err, errlen,
                "%s: key derivation would need %s of memory for scrypt (128 * N * r bytes); "
                "the limit is %s (N=16384, r=8 needs 16 MiB); export it again with a smaller "
                "N or r",
                label, a, b);
        return P12_ERR_COST;
    }
    if (c->scrypt_work > P12_MAX_SCRYPT_WORK) {
        thousands(c->scrypt_work, a, sizeof a);
        thousands(P12_MAX_SCRYPT_WORK, b, sizeof b);
        err_set(err, errlen,
                "%s: key derivation would take %s units of scrypt work (N * r * p summed "
                "over the encrypted parts); the limit is %s (N=16384, r=8, p=1 is 131,072); "
                "export it again with a smaller N, r or p",
                label, a, b);
        return P12_ERR_COST;
    }
    if (c->derivations > P12_MAX_DERIVATIONS) {
        err_set(err, errlen,
                "%s: key derivation would run %u times (once per encrypted part); the limit "
                "is %u",
                label, c->derivations, P12_MAX_DERIVATIONS);
        return P12_ERR_COST;
    }
    return P12_OK;
}

static enum p12_status add_scrypt(struct p12_cost *c, const ASN1_TYPE *param, const char *label,
                                  char *err, size_t errlen)
{
    SCRYPT_PARAMS *sp =
        param ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), param) : NULL;
    uint64_t n, r, p;
    int ok = sp && get_u64(sp->costParameter, 0, &n) == 0 && get_u64(sp->blockSize, 0, &r) == 0 &&
             get_u64(sp->parallelizationParameter, 0, &p) == 0;
    SCRYPT_PARAMS_free(sp);
    if (!ok) return bad_params(label, "scrypt", err, errlen);
    uint64_t mem = sat_mul(sat_mul(128, n), r);
    if (mem > c->scrypt_mem) c->scrypt_mem = mem;
    c->scrypt_work = sat_add(c->scrypt_work, sat_mul(sat_mul(n, r), p));
    return P12_OK;
}

enum p12_status p12_cost_add(struct p12_cost *c, const struct X509_algor_st *alg, const char *label,
                             char *err, size_t errlen)
{
    enum p12_status st = P12_OK;
    uint64_t it = 0;
    int nid = alg ? OBJ_obj2nid(alg->algorithm) : NID_undef;
    c->derivations++;
    if (nid == NID_pbes2) {
        PBE2PARAM *p2 = alg->parameter
                            ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter)
                            : NULL;
        int kdf = p2 && p2->keyfunc ? OBJ_obj2nid(p2->keyfunc->algorithm) : NID_undef;
        if (!p2 || !p2->keyfunc) {
            st = bad_params(label, "PBES2", err, errlen);
        } else if (kdf == NID_id_pbkdf2) {
            PBKDF2PARAM *kp =
                p2->keyfunc->parameter
                    ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), p2->keyfunc->parameter)
                    : NULL;
            if (!kp || get_u64(kp->iter, 1, &it) != 0)
                st = bad_params(label, "PBKDF2", err, errlen);
            PBKDF2PARAM_free(kp);
        } else if (kdf == NID_id_scrypt) {
            st = add_scrypt(c, p2->keyfunc->parameter, label, err, errlen);
        } else {
            char oid[80] = "?";
            OBJ_obj2txt(oid, sizeof oid, p2->keyfunc->algorithm, 1);
            err_set(err, errlen,
                    "%s: not a PKCS#12 file this gateway can open (unknown key-derivation "
                    "function %s; PBKDF2 and scrypt are supported)",
                    label, oid);
            st = P12_ERR_FORMAT;
        }
        PBE2PARAM_free(p2);
    } else if (nid != NID_undef && EVP_PBE_find(EVP_PBE_TYPE_OUTER, nid, NULL, NULL, NULL)) {
        /* PBES1 and the PKCS#12 PBE schemes: {salt, iterations} */
        PBEPARAM *p1 = alg->parameter
                           ? ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBEPARAM), alg->parameter)
                           : NULL;
        if (!p1 || get_u64(p1->iter, 1, &it) != 0) st = bad_params(label, "PBE", err, errlen);
        PBEPARAM_free(p1);
    } else {
        char oid[80] = "?";
        if (alg) OBJ_obj2txt(oid, sizeof oid, alg->algorithm, 1);
        err_set(err, errlen,
                "%s: not a PKCS#12 file this gateway can open (unknown password-based "
                "encryption %s)",
                label, oid);
        st = P12_ERR_FORMAT;
    }
    ERR_clear_error();
    if (st != P12_OK) return st;
    c->iterations = sat_add(c->iterations, it);
    return check(c, label, err, errlen);
}

/* The shrouded key bags of a visible SafeContents, nested ones included. */
static enum p12_status add_bags(struct p12_cost *c, const STACK_OF(PKCS12_SAFEBAG) * bags,
                                int depth, const char *label, char *err, size_t errlen)
{
    for (int i = 0; i < sk_PKCS12_SAFEBAG_num(bags); i++) {
        const PKCS12_SAFEBAG *bag = sk_PKCS12_SAFEBAG_value(bags, i);
        int nid = PKCS12_SAFEBAG_get_nid(bag);
        enum p12_status st = P12_OK;
        if (nid == NID_pkcs8ShroudedKeyBag) {
            const X509_SIG *sig = PKCS12_SAFEBAG_get0_pkcs8(bag);
            const X509_ALGOR *alg = NULL;
            if (!sig) return bad_params(label, "key bag", err, errlen);
            X509_SIG_get0(sig, &alg, NULL);
            st = p12_cost_add(c, alg, label, err, errlen);
        } else if (nid == NID_safeContentsBag) {
            if (depth >= MAX_NEST) {
                err_set(err, errlen, "%s: not a PKCS#12 file (bags nested more than %d deep)",
                        label, MAX_NEST);
                return P12_ERR_FORMAT;
            }
            st = add_bags(c, PKCS12_SAFEBAG_get0_safes(bag), depth + 1, label, err, errlen);
        }
        if (st != P12_OK) return st;
    }
    return P12_OK;
}

enum p12_status p12_cost_pkcs12(const struct PKCS12_st *p12, struct p12_cost *c, const char *label,
                                char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    enum p12_status st = P12_OK;
    if (PKCS12_mac_present(p12)) {
        const ASN1_INTEGER *iter = NULL;
        uint64_t it;
        PKCS12_get0_mac(NULL, NULL, NULL, &iter, p12);
        if (get_u64(iter, 1, &it) != 0) return bad_params(label, "MAC", err, errlen);
        c->derivations++;
        c->iterations = it;
        st = check(c, label, err, errlen);
        if (st != P12_OK) return st;
    }
    STACK_OF(PKCS7) *asafes = PKCS12_unpack_authsafes(p12);
    if (!asafes) {
        ERR_clear_error();
        err_set(err, errlen, "%s: not a PKCS#12 file (corrupt or unsupported content)", label);
        return P12_ERR_FORMAT;
    }
    for (int i = 0; st == P12_OK && i < sk_PKCS7_num(asafes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(asafes, i);
        int nid = OBJ_obj2nid(p7->type);
        if (nid == NID_pkcs7_data) {
            STACK_OF(PKCS12_SAFEBAG) *bags = PKCS12_unpack_p7data(p7);
            if (bags)
                st = add_bags(c, bags, 0, label, err, errlen);
            else
                st = bad_params(label, "SafeContents", err, errlen);
            sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
        } else if (nid == NID_pkcs7_encrypted) {
            if (!p7->d.encrypted || !p7->d.encrypted->enc_data)
                st = bad_params(label, "encrypted SafeContents", err, errlen);
            else
                st = p12_cost_add(c, p7->d.encrypted->enc_data->algorithm, label, err, errlen);
        }
        /* other content types are refused by the loader without any derivation */
    }
    sk_PKCS7_pop_free(asafes, PKCS7_free);
    ERR_clear_error();
    return st;
}

enum p12_status p12_cost_der(const void *der, size_t len, const char *label, struct p12_cost *c,
                             char *err, size_t errlen)
{
    const unsigned char *p = der;
    memset(c, 0, sizeof *c);
    if (!label) label = "keystore";
    PKCS12 *p12 = len <= LONG_MAX ? d2i_PKCS12(NULL, &p, (long)len) : NULL;
    if (!p12) {
        ERR_clear_error();
        err_set(err, errlen, "%s: not a PKCS#12 file (cannot decode it as DER PKCS#12)", label);
        return P12_ERR_FORMAT;
    }
    enum p12_status st = p12_cost_pkcs12(p12, c, label, err, errlen);
    PKCS12_free(p12);
    return st;
}
