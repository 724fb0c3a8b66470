using Loyalty.Storage;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Engine processes that form one cluster on one PostgreSQL (Orleans:Membership=Postgres), stopped together.</summary>
public sealed class ClusterNodes : IAsyncDisposable
{
    /// <summary>How often a node is started on other ports when one of its ports was taken meanwhile.</summary>
    private const int StartAttemptsMax = 3;

    private readonly List<HostProcess> _nodes;

    private ClusterNodes(List<HostProcess> nodes) => _nodes = nodes;

    /// <summary>The nodes, in the order they started (a restarted node keeps its place).</summary>
    public IReadOnlyList<HostProcess> Nodes
    {
        get
        {
            lock (_nodes)
            {
                return [.. _nodes];
            }
        }
    }

    /// <summary>
    /// Stops node <paramref name="index"/> with SIGTERM (it drains and stops by itself), then starts
    /// it again with the same command line; returns how the stop went.
    /// </summary>
    public async Task<(int ExitCode, TimeSpan Took)> RestartAsync(int index, TimeSpan stopTimeout)
    {
        HostProcess old = Nodes[index];
        (int, TimeSpan) stopped = await old.TerminateAsync(stopTimeout);
        await old.DisposeAsync();
        HostProcess started = await HostProcess.StartAsync([.. old.Args], old.Port);
        lock (_nodes)
        {
            _nodes[index] = started;
        }

        return stopped;
    }

    /// <summary>Starts <paramref name="count"/> engines one after another, each serving before the next starts.</summary>
    public static async Task<ClusterNodes> StartAsync(StorageOptions storage, int count, params string[] extraArgs)
    {
        var nodes = new List<HostProcess>();
        try
        {
            for (int n = 0; n < count; n++)
            {
                nodes.Add(await StartNodeAsync(storage, extraArgs));
            }
        }
        catch
        {
            await new ClusterNodes(nodes).DisposeAsync();
            throw;
        }

        return new ClusterNodes(nodes);
    }

    /// <summary>
    /// Starts one engine on ports that were free a moment ago. Another process may take one of
    /// them before the engine binds it (seen once in CI: "address already in use", exit 134); the
    /// engine then exits saying so, and is started again on other ports, at most
    /// <see cref="StartAttemptsMax"/> times.
    /// </summary>
    private static async Task<HostProcess> StartNodeAsync(StorageOptions storage, string[] extraArgs)
    {
        for (int attempt = 1; ; attempt++)
        {
            int port = Ports.Free();
            try
            {
                return await HostProcess.StartAsync([.. EngineArgs.For(storage, port), "--Orleans:Membership=Postgres", .. extraArgs], port);
            }
            catch (InvalidOperationException e) when (attempt < StartAttemptsMax && e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
            {
                // Taken meanwhile: try other ports.
            }
        }
    }

    /// <summary>Stops every node still running (only the processes these nodes started).</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (HostProcess node in Nodes)
        {
            await node.DisposeAsync();
        }
    }
}
