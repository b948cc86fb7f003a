// kStationEkuOid: the extendedKeyUsage that marks a certificate as a linesign station or administrator credential
// (a "station credential"), as opposed to a device certificate linesign issued through SignCsr.
//
// Why: when tls.client_ca_file trusts linesign's own issuing CA (or a CA above it), every device certificate
// chains to a trusted CA and carries clientAuth, so without a marker a station could obtain a device certificate
// with CN "admin" and call as an administrator. With tls.require_station_marker every client certificate must
// carry this EKU, and config validation refuses it (and anyExtendedKeyUsage) in every profile, so SignCsr can
// never issue it.
//
// linesign has no registered OID arc, so the marker lives under the ITU-T X.667 UUID arc 2.25: the decimal form
// of the random UUID 7eb565fe-641e-4664-a74d-6f1014ea11ba, minted once for this purpose. Never change it: every
// station credential in the field carries it. Note that its last arc exceeds 64 bits (common/der.h cannot encode
// it; OpenSSL's OBJ_txt2obj can).
#ifndef LINESIGN_SERVER_AUTH_STATION_CREDENTIAL_H_
#define LINESIGN_SERVER_AUTH_STATION_CREDENTIAL_H_

namespace linesign::auth {

inline constexpr char kStationEkuOid[] = "2.25.168424601878602552407604844749696668090";

// kStationEkuName is how messages and documentation name the marker.
inline constexpr char kStationEkuName[] = "the linesign station EKU 2.25.168424601878602552407604844749696668090";

}  // namespace linesign::auth

#endif  // LINESIGN_SERVER_AUTH_STATION_CREDENTIAL_H_
