using Loyalty.Storage;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Engine processes that form one cluster on one PostgreSQL (Orleans:Membership=Postgres), stopped together.</summary>
public sealed class ClusterNodes : IAsyncDisposable
{
    private ClusterNodes(List<HostProcess> nodes) => Nodes = nodes;

    /// <summary>The nodes, in the order they started.</summary>
    public IReadOnlyList<HostProcess> Nodes { get; }

    /// <summary>Starts <paramref name="count"/> engines one after another, each serving before the next starts.</summary>
    public static async Task<ClusterNodes> StartAsync(StorageOptions storage, int count)
    {
        var nodes = new List<HostProcess>();
        try
        {
            for (int n = 0; n < count; n++)
            {
                int port = Ports.Free();
                nodes.Add(await HostProcess.StartAsync([.. EngineArgs.For(storage, port), "--Orleans:Membership=Postgres"], port));
            }
        }
        catch
        {
            await new ClusterNodes(nodes).DisposeAsync();
            throw;
        }

        return new ClusterNodes(nodes);
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
