using System.Data.Common;

namespace Loyalty.Storage;

/// <summary>Commands with <c>@name</c> parameters, for the stores whose SQL both databases share.</summary>
internal static class SqlCommands
{
    /// <summary>A command on the connection with the parameters given as (name, value) pairs.</summary>
    public static DbCommand Command(DbConnection connection, string sql, params (string Name, object Value)[] parameters)
    {
        DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            DbParameter parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }

        return command;
    }

    /// <summary>A command in the transaction (SQLite refuses a command without it while one is open on the connection).</summary>
    public static DbCommand Command(DbTransaction transaction, string sql, params (string Name, object Value)[] parameters)
    {
        DbCommand command = Command(transaction.Connection!, sql, parameters);
        command.Transaction = transaction;
        return command;
    }
}
