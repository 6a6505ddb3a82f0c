// Command vsphere_sim runs govmomi's vCenter simulator for the exporter's integration tests.
//
// It listens on the address given by -listen (the test picks the port), serves TLS with a
// certificate issued at start by a throwaway CA of its own (the simulator's built-in test
// certificate has a 1024-bit key, which OpenSSL refuses as too weak), accepts only the user name given by -username and the password
// read from the environment variable named by -password-env (never a command-line argument),
// and writes one JSON line to stdout once it is ready:
//
//	{"url": "https://127.0.0.1:PORT/sdk", "thumbprint": "<sha-256 hex of the server certificate>",
//	 "ca_file": "<PEM of the CA that issued it>"}
//
// Datastore files are served under /folder/ like vCenter's datastore HTTP interface; unlike the
// stock simulator, a /folder/ request needs a live session cookie (vmware_soap_session), as on a
// real vCenter. The process exits on SIGTERM/SIGINT or when its stdin closes (its parent died),
// removing the simulator's datastore directories.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

// currentTime is the smallest SOAP call the simulator refuses without a session.
const currentTime = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
<soapenv:Body><CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime></soapenv:Body>
</soapenv:Envelope>`

// hasSession asks the simulator itself whether the request's session cookie is a live session.
func hasSession(service *simulator.Service, r *http.Request) bool {
	cookie, err := r.Cookie("vmware_soap_session")
	if err != nil || cookie.Value == "" {
		return false
	}
	probe := httptest.NewRequest(http.MethodPost, "/sdk", bytes.NewBufferString(currentTime))
	probe.Header.Set("Content-Type", "text/xml")
	probe.AddCookie(cookie)
	recorder := httptest.NewRecorder()
	service.ServeSDK(recorder, probe)
	return recorder.Code == http.StatusOK
}

// issue makes a CA and a server certificate for 127.0.0.1, ::1 and localhost, both ECDSA P-256.
func issue() (tls.Certificate, []byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vsphere-sim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caPEM, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	username := flag.String("username", "administrator@vsphere.local", "the only user name accepted")
	passwordEnv := flag.String("password-env", "VSPHERE_SIM_PASSWORD", "environment variable holding the password")
	certOut := flag.String("cert-out", "", "file to write the issuing CA certificate to (PEM)")
	datacenters := flag.Int("dc", 2, "datacenters")
	machines := flag.Int("vm", 3, "VMs per resource pool and per standalone host")
	flag.Parse()

	password := os.Getenv(*passwordEnv)
	if password == "" || *certOut == "" {
		log.Fatal("a password (environment) and -cert-out are required")
	}
	_ = os.Unsetenv(*passwordEnv)

	model := simulator.VPX()
	model.Datacenter = *datacenters
	model.Folder = 1 // the last datacenter and its inventory live inside folders, as path test data
	model.Cluster = 1
	model.ClusterHost = 2
	model.Host = 1
	model.Machine = *machines
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, password)}
	certificate, caPEM, err := issue()
	if err != nil {
		log.Fatal(err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{certificate}, MinVersion: tls.VersionTLS12}
	server := model.Service.NewServer()
	defer server.Close()

	// vCenter refuses datastore file access without a session; the stock simulator does not.
	inner := server.Config.Handler
	server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/folder/") && !hasSession(model.Service, r) {
			http.Error(w, "session required", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})

	if err := os.WriteFile(*certOut, caPEM, 0o600); err != nil {
		log.Fatal(err)
	}
	digest := sha256.Sum256(certificate.Certificate[0])
	endpoint := *server.URL
	endpoint.User = nil
	ready, _ := json.Marshal(map[string]string{
		"url":        endpoint.String(),
		"thumbprint": hex.EncodeToString(digest[:]),
		"ca_file":    *certOut,
	})
	os.Stdout.Write(append(ready, '\n'))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // returns when the parent closes the pipe or dies
		stop <- syscall.SIGTERM
	}()
	<-stop
}
