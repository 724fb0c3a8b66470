using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;
using Loyalty.Api;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

/// <summary>The engine serving HTTPS with a configured certificate, made by the test itself.</summary>
public sealed class TlsTests
{
    [Fact]
    public async Task HttpsEndpoint_WithAConfiguredCertificate_ServesGrpcAndJsonOnOnePort()
    {
        using X509Certificate2 certificate = SelfSigned();
        string folder = TestDatabases.TempFolder();
        string pfx = Path.Combine(folder, "engine.pfx");
        const string password = "test-only";
        await File.WriteAllBytesAsync(pfx, certificate.Export(X509ContentType.Pfx, password));
        int port = Ports.Free();
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "tls"), null,
            $"--Kestrel:Endpoints:Grpc:Url=https://127.0.0.1:{port}",
            "--Kestrel:Endpoints:Grpc:Protocols=Http1AndHttp2",
            $"--Kestrel:Endpoints:Grpc:Certificate:Path={pfx}",
            $"--Kestrel:Endpoints:Grpc:Certificate:Password={password}");
        using var channel = GrpcChannel.ForAddress($"https://127.0.0.1:{port}", new GrpcChannelOptions { HttpHandler = Trusting(certificate) });
        using var http = new HttpClient(Trusting(certificate)) { BaseAddress = new Uri($"https://127.0.0.1:{port}") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", TestKeys.Operator);

        V1.ApiKey overGrpc = await new V1.Access.AccessClient(channel.WithKey(TestKeys.Operator)).WhoAmIAsync(new V1.WhoAmIRequest());
        HttpResponseMessage overJson = await http.GetAsync("/v1/whoami");

        Assert.Equal(V1.KeyScope.Operator, overGrpc.Scope);
        Assert.Equal(HttpStatusCode.OK, overJson.StatusCode);
        Assert.Contains("KEY_SCOPE_OPERATOR", await overJson.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    /// <summary>A handler that trusts exactly this certificate (it is in no trust store).</summary>
    private static SocketsHttpHandler Trusting(X509Certificate2 certificate)
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
            presented is not null && presented.GetCertHashString() == certificate.GetCertHashString();
        return handler;
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=loyalty-test", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }
}
