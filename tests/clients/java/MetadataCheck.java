import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

/**
 * What pgjdbc's DatabaseMetaData and a PreparedStatement see of one table.
 *
 * Usage: java MetadataCheck jdbc:postgresql://host:port/db user table
 * Prints one fact a line, tab-separated, the kind first:
 *   table   schema name type
 *   column  name type_name data_type
 *   schema  name
 *   pk      column key_seq pk_name
 *   param   run id label
 *   error   kind sqlstate message   (a section that failed; the others still run)
 */
public class MetadataCheck {
    private interface Section {
        void run() throws SQLException;
    }

    public static void main(String[] args) throws SQLException {
        String url = args[0];
        String user = args[1];
        String table = args[2];
        try (Connection c = DriverManager.getConnection(url, user, "")) {
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS " + table);
                s.execute("CREATE TABLE " + table + " (id INTEGER, label TEXT, price NUMERIC(10,2),"
                        + " seen TIMESTAMP, ok BOOLEAN, PRIMARY KEY (label, id))");
            }
            DatabaseMetaData md = c.getMetaData();
            section("table", () -> {
                try (ResultSet r = md.getTables(null, "public", table, new String[] {"TABLE"})) {
                    while (r.next()) {
                        line("table", r.getString("TABLE_SCHEM"), r.getString("TABLE_NAME"),
                                r.getString("TABLE_TYPE"));
                    }
                }
            });
            section("column", () -> {
                try (ResultSet r = md.getColumns(null, "public", table, "%")) {
                    while (r.next()) {
                        line("column", r.getString("COLUMN_NAME"), r.getString("TYPE_NAME"),
                                String.valueOf(r.getInt("DATA_TYPE")));
                    }
                }
            });
            section("schema", () -> {
                try (ResultSet r = md.getSchemas()) {
                    while (r.next()) {
                        line("schema", r.getString("TABLE_SCHEM"));
                    }
                }
            });
            section("pk", () -> {
                try (ResultSet r = md.getPrimaryKeys(null, "public", table)) {
                    while (r.next()) {
                        line("pk", r.getString("COLUMN_NAME"), String.valueOf(r.getInt("KEY_SEQ")),
                                r.getString("PK_NAME"));
                    }
                }
            });
            section("param", () -> {
                try (PreparedStatement p = c.prepareStatement("INSERT INTO " + table + " (id, label) VALUES (?, ?)")) {
                    p.setInt(1, 7);
                    p.setString(2, "seven");
                    p.executeUpdate();
                }
                // pgjdbc switches to a named server-side statement (and binary results) from the 5th run on.
                String select = "SELECT id, label FROM " + table + " WHERE id = ? AND label = ?";
                try (PreparedStatement p = c.prepareStatement(select)) {
                    for (int run = 1; run <= 6; run++) {
                        p.setInt(1, 7);
                        p.setString(2, "seven");
                        try (ResultSet r = p.executeQuery()) {
                            while (r.next()) {
                                line("param", String.valueOf(run), String.valueOf(r.getInt(1)), r.getString(2));
                            }
                        }
                    }
                }
            });
        }
    }

    /** Runs one section; a failure prints an error line and the next section still runs. */
    private static void section(String kind, Section body) {
        try {
            body.run();
        } catch (SQLException e) {
            line("error", kind, String.valueOf(e.getSQLState()), String.valueOf(e.getMessage()).replace('\n', ' '));
        }
    }

    private static void line(String... cells) {
        System.out.println(String.join("\t", cells));
    }
}
